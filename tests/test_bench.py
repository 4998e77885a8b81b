"""`make bench`'s arithmetic: ratios against the baseline of the same run, FLOP/s and the share of peak."""

import pytest

from benchmarks import bench


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
