"""A sweep keeps both cores busy to its end: workers split this machine's cores among its running trials."""

import optuna
from optuna.trial import TrialState

from p2p.sweep import study as studies
from p2p.sweep.worker import cores_per_local_trial


def test_cores_are_split_among_this_machines_running_trials(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    study = optuna.create_study()
    here = studies.worker_name().split(":")[0]

    def running(worker: str):
        trial = study.ask()
        trial.set_user_attr(studies.WORKER, worker)
        return trial

    first = running(f"{here}:1")
    assert cores_per_local_trial(study) == 4  # alone on the machine: every core
    running(f"{here}:2")
    running("elsewhere:3")  # another machine's trial takes none of these cores
    assert cores_per_local_trial(study) == 2
    study.tell(first, 1.0)
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 2
    assert cores_per_local_trial(study) == 4  # the last local trial takes over the finished one's cores
