"""`make bench`'s arithmetic and tables (ratios, FLOP/s, the sweep view's projection), which variants run
where, and its measuring children run for real on the CPU (no timing is judged: speed belongs in make bench)."""

import pytest

from benchmarks import bench, throughput


def test_ratios_flops_and_peak_share_come_from_the_same_runs_baseline():
    report = {"machine": {"cpu": "test", "threads": 2, "cpu_capability": "AVX2", "torch": "x", "python": "3",
                          "peak_flops": 2.0e11},
              "train": [
                  {"setting": "paper", "variant": "baseline", "device": "cpu", "ms_per_iter": 1000.0, "img_per_s": 1.0,
                   "flops_per_iter": 1.0e11, "rounds_ms": [1000.0]},
                  {"setting": "paper", "variant": "p2p fp32", "device": "cpu", "ms_per_iter": 800.0, "img_per_s": 1.25,
                   "rounds_ms": [800.0]},
                  {"setting": "cpu", "variant": "baseline", "device": "cpu", "ms_per_iter": 100.0, "img_per_s": 10.0,
                   "flops_per_iter": 1.0e10, "rounds_ms": [100.0]},
                  {"setting": "cpu", "variant": "p2p bf16", "device": "cpu", "ms_per_iter": 400.0, "img_per_s": 2.5,
                   "rounds_ms": [400.0]},
                  {"setting": "cpu", "variant": "p2p fp32 + compile", "device": "cpu", "error": "boom"}]}
    bench.add_ratios(report)
    rows = {(r["setting"], r["variant"]): r for r in report["train"]}
    assert rows["paper", "p2p fp32"]["speedup_vs_baseline"] == pytest.approx(1.25)
    assert rows["paper", "p2p fp32"]["achieved_flops"] == pytest.approx(1.25e11)
    assert rows["paper", "p2p fp32"]["peak_fraction"] == pytest.approx(0.625)
    assert rows["paper", "baseline"]["peak_fraction"] == pytest.approx(0.5)
    assert rows["cpu", "p2p bf16"]["speedup_vs_baseline"] == pytest.approx(0.25)  # slower: a ratio below 1
    assert rows["cpu", "p2p bf16"]["achieved_flops"] == pytest.approx(2.5e10)
    table = bench.format_table(report)
    assert "| paper | cpu | p2p fp32 | 800.0 | 1.25 | 1.25x | 125.0 | 62.5% |" in table
    assert "| cpu | cpu | p2p fp32 + compile | error: boom |" in table


def test_peak_flop_per_cycle_follows_the_fma_width():
    assert bench.flop_per_cycle({"avx2", "fma", "avx512f"}) == 64  # Intel server: two 512-bit FMA pipes
    assert bench.flop_per_cycle({"avx2", "fma", "avx512f"}, amd_256bit_fma=True) == 32  # Zen 4: AVX-512 on 256 bits
    assert bench.flop_per_cycle({"avx2", "fma"}) == 32
    assert bench.flop_per_cycle({"sse4_2"}) == 8


# ---------------------------------------------------------------- which jobs run where


def test_cuda_only_variants_are_measured_on_cuda_alone():
    variants = list(bench.VARIANTS)
    cpu = bench.train_jobs(["cpu"], list(bench.SETTINGS), variants, repeats=2)
    assert cpu and not {v for _, v, _ in cpu} & bench.CUDA_ONLY
    assert {v for _, v, _ in cpu} == set(variants) - bench.CUDA_ONLY
    both = bench.train_jobs(["cpu", "cuda"], list(bench.SETTINGS), variants, repeats=1)
    assert {v for _, v, d in both if d == "cuda"} == set(variants)
    assert {"p2p fp32 graph", "p2p bf16 channels_last compile + graph"} <= bench.CUDA_ONLY


def test_sweep_jobs_stop_at_the_cpus_cores_and_pack_within_processes_only_there(monkeypatch):
    monkeypatch.setattr(throughput.os, "cpu_count", lambda: 2)
    assert throughput.sweep_jobs("cpu", (1, 2, 4, 8), ("v",)) == [("v", 1, 1), ("v", 2, 1), ("v", 1, 2), ("v", 2, 2)]
    gpu = throughput.sweep_jobs("cuda", (1, 2, 4, 8), ("a", "b"))
    assert [(p, k) for v, p, k in gpu if v == "a"] == [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4), (8, 1), (1, 8)]
    assert len(gpu) == 14
    assert throughput.threads_each(2, "cpu") == 1 and throughput.threads_each(1, "cpu") == 2
    assert throughput.threads_each(8, "cuda") == 1  # 2 cores: never more threads than the cores


def test_unknown_part_to_skip_is_an_error(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--skip", "train,sweeps"])
    assert stop.value.code == 2
    assert "unknown parts sweeps" in capsys.readouterr().err


# ---------------------------------------------------------------- the sweep view's arithmetic and tables


def test_patchsize_projection_is_trials_times_steps_over_the_rate():
    # sweeps/patchsize.yaml: 4 cells; CPU scale 4 seeds x (3 + 3) epochs, paper 3 seeds x (100 + 100) epochs;
    # one step per facades training pair (batch 1)
    cpu = throughput.project_patchsize(64.0, "cpu")
    assert (cpu["trials"], cpu["epochs"], cpu["steps"]) == (16, 96, 16 * 6 * 400)
    assert cpu["wall_min"] == pytest.approx(38_400 / 64 / 60)  # 10 min
    paper = throughput.project_patchsize(800.0, "paper", images=400)
    assert (paper["trials"], paper["steps"]) == (12, 12 * 200 * 400)
    assert paper["wall_min"] == pytest.approx(20.0)
    assert throughput.project_patchsize(800.0, "paper", images=40)["steps"] == 12 * 200 * 40


def _row(variant: str, processes: int, pack: int, it_per_s: float, threads: int = 1) -> dict:
    return {"variant": variant, "how": throughput.how(processes, pack), "processes": processes, "pack": pack,
            "trials": processes * pack, "threads_each": threads, "it_per_s": it_per_s}


def test_sweep_view_table_compares_each_row_with_its_variants_one_trial():
    rows = [_row("eager", 1, 1, 100.0, 4), _row("eager", 4, 1, 410.0), _row("eager", 1, 4, 250.0, 4),
            _row("graph", 1, 1, 286.0, 4), _row("graph", 1, 8, 576.0, 4),
            {"variant": "graph", "how": "processes", "processes": 8, "pack": 1, "trials": 8, "error": "out of memory"}]
    best = rows[4]
    view = {"setting": "paper 256 batch 1", "scale": "paper", "device": "cuda", "seconds": 10.0, "rows": rows,
            "best": best, "projection": throughput.project_patchsize(best["it_per_s"], "paper")}
    table = "\n".join(throughput.format_sweep_view(view))
    assert "trials together on one cuda (paper 256 batch 1, 10 s timed each)" in table
    assert "| processes | eager | 4 x 1 | 1 | 410.0 | 4.10x |" in table
    assert "| pack | eager | 1 x 4 | 4 | 250.0 | 2.50x |" in table
    assert "| pack | graph | 1 x 8 | 4 | 576.0 | 2.01x |" in table  # over the graph's own single trial
    assert "| processes | graph | 8 x 1 | | error: out of memory | |" in table
    # 12 trials x 200 epochs x 400 steps at 576 it/s: 1667 s
    assert "Best: pack 1 x 8 (graph), 576.0 it/s: the paper-scale patch-size sweep (12 trials, 960,000 steps) " \
           "would train in 28 min" in table


def test_epoch_table_shows_both_epochs_the_checkpoint_and_errors():
    rows = [{"setting": "cpu scale 128", "device": "cpu", "variant": "p2p bf16", "images": 40,
             "img_per_s_by_epoch": [12.04, 15.96], "img_per_s": 15.96},
            {"setting": "paper 256 batch 1", "device": "cuda", "variant": "graph", "images": 400,
             "img_per_s_by_epoch": [100.0, 300.0, 301.0], "img_per_s": 300.0,
             "checkpoint": {"write_s": 0.5, "mb": 686.2}, "img_per_s_with_checkpoint": 218.2},
            {"setting": "paper 256 batch 1", "device": "cuda", "variant": "p2p fp32", "error": "boom"}]
    table = "\n".join(throughput.format_epochs(rows))
    assert "| cpu scale 128 | cpu | p2p bf16 | 40 | 12.0 | 16.0 | | |" in table  # a report from before the column
    assert "| paper 256 batch 1 | cuda | graph | 400 | 100.0 | 300.0 | 686 | 0.50 | 218.2 |" in table
    assert "| paper 256 batch 1 | cuda | p2p fp32 | | error: boom | | | | |" in table


def test_cuda_rows_show_kernels_and_gpu_busy_share_and_the_report_holds_the_sweep_view():
    report = {"machine": {"cpu": "test", "threads": 16, "cpu_capability": "AVX2", "torch": "x", "python": "3",
                          "gpu": "NVIDIA H200"},
              "train": [
                  {"setting": "paper", "variant": "baseline", "device": "cpu", "ms_per_iter": 800.0,
                   "img_per_s": 1.25, "rounds_ms": [800.0]},
                  {"setting": "paper", "variant": "p2p fp32", "device": "cuda", "ms_per_iter": 10.9,
                   "img_per_s": 91.7, "rounds_ms": [10.9], "kernels_per_iter": 1822.0, "gpu_busy_ms_per_iter": 4.2,
                   "gpu_busy_share": 4.2 / 10.9}],
              "scoring": [], "sweep_view": [{"setting": "cpu scale 128", "scale": "cpu", "device": "cpu",
                                             "seconds": 20.0, "rows": [_row("p2p bf16", 2, 1, 30.0)]}],
              "epochs": [{"setting": "cpu scale 128", "device": "cpu", "variant": "p2p bf16", "images": 40,
                          "img_per_s_by_epoch": [12.0, 16.0], "img_per_s": 16.0}]}
    table = bench.format_table(report)
    assert "| rounds (ms) | kernels/iter | GPU busy |" in table
    assert "| paper | cuda | p2p fp32 | 10.9 | 91.70 | - | - | - | [10.9] | 1822 | 39% |" in table
    assert "| paper | cpu | baseline | 800.0 | 1.25 | - | - | - | [800.0] | - | - |" in table
    assert "## Sweep view: trials together on one cpu" in table
    assert "| processes | p2p bf16 | 2 x 1 | 1 | 30.0 | - |" in table  # no single trial measured: no ratio
    assert "| cpu scale 128 | cpu | p2p bf16 | 40 | 12.0 | 16.0 |" in table


# ---------------------------------------------------------------- the children, for real (CPU, seconds)


@pytest.mark.slow
def test_trials_together_run_in_child_processes_and_count_their_steps():
    """Two processes of two trials each, at the CPU scale for half a second: the protocol (ready, go, one
    JSON line) and the count; no timing is judged here (speed belongs in make bench)."""
    row = throughput.measure_together(bench.SETTINGS[1], "p2p fp32", "cpu", processes=2, pack=2, seconds=0.5)
    assert (row["how"], row["trials"], row["threads_each"]) == ("processes x pack", 4, throughput.threads_each(2, "cpu"))
    assert row["it_per_s"] > 0


@pytest.mark.slow
def test_a_real_epoch_child_reports_its_epochs_and_the_checkpoint(data_root):
    (row,) = throughput.measure_epochs("cpu", str(data_root), images=2)
    assert "error" not in row, row.get("error")
    assert row["images"] == 2 and len(row["img_per_s_by_epoch"]) == 3 and row["img_per_s"] == row["img_per_s_by_epoch"][1]
    assert row["checkpoint"]["mb"] > 1 and row["checkpoint"]["write_s"] > 0 and row["img_per_s_with_checkpoint"] > 0


def test_a_failing_child_reports_its_last_line():
    with pytest.raises(RuntimeError, match="unknown variant 'no such variant'"):
        throughput.measure_together(bench.SETTINGS[1], "no such variant", "cpu", processes=1, pack=1, seconds=0.1)
