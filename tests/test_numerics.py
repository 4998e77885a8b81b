"""Numerics pinned: a tiny deterministic run's final weights and fixed images' scores must not move.

Restructuring the code must leave what a run computes bit-identical, so published results stay
valid. The run happens in a fresh process with the CPU kernels pinned to AVX2 (ATen and oneDNN),
so the same bits come out on AVX2 and AVX-512 machines. A change that alters the numbers on
purpose (a new stream, a new default) updates tests/golden/numerics.json and says so.
"""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "numerics.json"
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
          "OMP_NUM_THREADS": "1"}


def probe(data_root) -> dict:
    env = {**os.environ, **PINNED, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tests.numerics_probe", str(data_root)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_final_weights_and_scores_are_unchanged(data_root, private_cache):
    got = probe(data_root)
    golden = json.loads(GOLDEN.read_text())
    assert got["generator_sha256"] == golden["generator_sha256"]
    for key, value in golden["scores"].items():
        assert abs(got["scores"][key] - value) < 1e-9, key
    for key, value in golden["train_scores"].items():
        assert abs(got["train_scores"][key] - value) < 1e-9, key
