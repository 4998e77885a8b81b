"""Sweeps: an ablation as an Optuna study of (cell, seed) trials, each a tracked MLflow run.

- `spec`: sweep specs (YAML) -> `SweepSpec`, and each trial's run config (no torch, no optuna);
- `study`: the Optuna storage, study, trial queue and heartbeats: the only module that imports optuna
  (the others read `TrialRecord`s and act through `ClaimedTrial`);
- `worker`: a process that claims trials and trains them, resuming checkpoints;
- `driver`: the `p2p sweep` command (prepare, start workers, progress, summary);
- `estimate`: `--dry-run`'s table and time estimate;
- `rounds`: `--until-resolved`, seeds in rounds until every claim is settled;
- `claims`: `Findings`, what the CLI hands the sweep about its claims (this package never imports `analysis`).
"""
