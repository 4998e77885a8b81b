"""The import contracts in pyproject.toml ([tool.importlinter], what `make lint` runs) hold, and breaking one fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # run from `root`: import-linter finds the packages it checks from the working directory first
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=60)


def test_the_repository_keeps_every_import_contract():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 kept, 0 broken" in proc.stdout


def copy_of_the_code(dest: Path) -> Path:
    for package in ("p2p", "analysis", "benchmarks"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "data", "palettes"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint_with_an_import(tmp_path: Path, module: str, statement: str) -> subprocess.CompletedProcess:
    """lint-imports over a copy of the code in which `module` (a path under the root) gains `statement`: it fails."""
    root = copy_of_the_code(tmp_path)
    with open(root / module, "a") as f:
        f.write(f"\n{statement}  # noqa: E402,F401\n")
    proc = lint_imports(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc


def test_analysis_importing_the_cli_breaks_its_contract_and_the_floors(tmp_path):
    proc = lint_with_an_import(tmp_path, "analysis/summary.py", "import p2p.cli")
    assert "4 kept, 2 broken" in proc.stdout
    broken = [line for line in proc.stdout.splitlines() if line.endswith("BROKEN")]
    assert broken == ["The floors, from the command line down to the names and errors BROKEN",
                      "analysis never imports the CLI, which sits above it BROKEN"], proc.stdout
    assert "analysis.summary -> p2p.cli" in proc.stdout


def test_a_second_module_importing_mlflow_breaks_its_contract(tmp_path):
    proc = lint_with_an_import(tmp_path, "p2p/evaluate.py", "import mlflow")
    assert "5 kept, 1 broken" in proc.stdout and "p2p.evaluate -> mlflow" in proc.stdout
