"""Faults outside the code stay one line: a tracking store or sweep storage that cannot be reached (a
closed port, a wrong password, a missing database), an MLflow server that dies mid-run (killed and
started again for real), a full disk while a checkpoint is written, an image that is not two square halves."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from p2p import checkpoint, data, tracking
from p2p.cli import main
from p2p.config import DataConfig
from p2p.errors import UserError
from tests.helpers import DATA_ROOT, ROOT, TINY, free_port, one_error_line, postgres_server, sets, wait_until

FACADES = str(ROOT / "experiments" / "facades.yaml")
PASSWORD = "Zq8-secret-pw"  # must never appear in a message
EPOCHS = 40


one_error_line = functools.partial(one_error_line, secret=PASSWORD)  # a message never shows the password


# ---------------------------------------------------------------- stores that cannot be reached


@pytest.fixture(scope="module")
def password_postgres():
    """A throwaway PostgreSQL on 127.0.0.1 that checks passwords (user p2p, databases mlflow and optuna)."""
    with postgres_server("p2p-pgpw-", password=PASSWORD) as url:
        yield url


def wrong_password(url: str) -> str:
    return url.replace(PASSWORD, PASSWORD[::-1])


def unreachable_urls(postgres: str) -> dict[str, str]:
    closed = free_port()  # nothing listens there
    return {"closed port": f"postgresql+psycopg2://p2p:{PASSWORD}@127.0.0.1:{closed}/db",
            "wrong password": wrong_password(postgres) + "/mlflow",
            "missing database": f"{postgres}/no_such_db"}


@pytest.mark.parametrize("fault", ["closed port", "wrong password", "missing database", "closed http port"])
def test_a_tracking_store_that_cannot_be_reached_stops_train_before_any_training(
        fault, password_postgres, tmp_path, monkeypatch, tiny_overrides, capsys):
    url = (f"http://127.0.0.1:{free_port()}" if fault == "closed http port"
           else unreachable_urls(password_postgres)[fault])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    assert main(["train", FACADES, *sets(tiny_overrides), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err, "MLFLOW_TRACKING_URI", "cannot reach the MLflow tracking store")
    assert tracking.store_name(url).split(" ", 1)[1] in line  # the URL, password redacted
    if "@" in url:
        assert "p2p:***@127.0.0.1" in line
    assert not Path(tiny_overrides["runtime.out_dir"]).exists()  # no run folder: nothing trained


def test_a_tracking_store_whose_sqlite_file_is_not_a_database_is_one_line(tmp_path, monkeypatch, tiny_overrides,
                                                                          capsys):
    (tmp_path / "mlflow.db").write_text("not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["train", FACADES, *sets(tiny_overrides), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, str(tmp_path / "mlflow.db"), "cannot reach")


@pytest.mark.parametrize("fault", ["closed port", "wrong password", "missing database"])
def test_a_sweep_storage_that_cannot_be_reached_stops_the_sweep_before_any_trial(
        fault, password_postgres, tmp_path, mlflow_uri, capfd):
    from tests.helpers import write_sweep_spec as write_spec

    spec = write_spec(tmp_path, "faulty", {"a": {}}, seeds=1)
    url = unreachable_urls(password_postgres)[fault].replace("/mlflow", "/optuna")
    code = main(["sweep", str(spec), "--scale", "cpu", "--workers", "1", "--storage", url, "--no-progress"])
    err = capfd.readouterr().err  # the worker's too: it leaves quietly
    assert code == 2
    line = one_error_line(err, "--storage", "cannot open the Optuna storage", "p2p:***@127.0.0.1")
    assert url.rsplit("@", 1)[1] in line
    assert not (tmp_path / "runs").exists()


def test_a_sweep_with_an_unreachable_tracking_server_stops_before_any_trial(tmp_path, monkeypatch, capfd):
    from tests.helpers import write_sweep_spec as write_spec

    spec = write_spec(tmp_path, "faulty", {"a": {}}, seeds=1)
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", str(spec), "--scale", "cpu", "--workers", "1", "--storage",
                 f"sqlite:///{tmp_path / 'optuna.db'}", "--no-progress"])
    assert code == 2
    one_error_line(capfd.readouterr().err, f"MLFLOW_TRACKING_URI {url}", "cannot reach")
    assert not (tmp_path / "runs").exists()


def test_the_stores_that_answer_pass_the_check(password_postgres, tmp_path):
    from p2p.sweep import study as studies

    tracking.check_store(f"{password_postgres}/mlflow")
    studies.check_storage(f"{password_postgres}/optuna")
    tracking.check_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # a new file in a folder to be made
    assert not (tmp_path / "new").exists()  # the check creates nothing


# ---------------------------------------------------------------- a tracking server that dies mid-run


class MlflowServer:
    """`mlflow server` on a sqlite backend, which the test can kill and start again on the same port."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.folder / "mlflow-server.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                      f"sqlite:///{self.folder / 'server.db'}", "--artifacts-destination",
                                      str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", "1"], stdout=open(log, "a"), stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.folder)

        def healthy() -> bool:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                return urllib.request.urlopen(f"{self.url}/health", timeout=2).status == 200
            except OSError:
                return False

        wait_until(healthy, 180, "mlflow server", log)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.kill()


@pytest.mark.slow
def test_a_tracking_server_that_dies_mid_run_keeps_the_checkpoint_and_resume_continues_the_run(
        tmp_path, data_root, mlflow_server):
    out = tmp_path / "runs"
    settings = {**TINY, "optim.epochs": EPOCHS, "optim.decay_epochs": 0, "runtime.out_dir": str(out)}
    cmd = [sys.executable, "-m", "p2p", "train", FACADES, *sets(settings), "--no-progress"]
    # MLflow's client retries a dead server for minutes; one try keeps the test short
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url, "P2P_DATA_ROOT": str(DATA_ROOT),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    log = tmp_path / "train.log"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_until(lambda: list(out.glob(f"facades/*/{checkpoint.CHECKPOINT}")), 180, "first checkpoint", log)
    mlflow_server.kill()
    assert proc.wait(timeout=120) == 2, log.read_text()
    folder = next(out.glob(f"facades/*/{checkpoint.CHECKPOINT}")).parent
    state = checkpoint.load(folder / checkpoint.CHECKPOINT)
    line = one_error_line(log.read_text(), f"MLFLOW_TRACKING_URI {mlflow_server.url}", "failed",
                          f"the checkpoint of epoch {state['epoch']} is kept in {folder}", "--resume")
    assert 1 <= state["epoch"] < EPOCHS, line
    assert not list(folder.glob(".*.tmp"))

    mlflow_server.start()  # the same port and backend: the run is still there, RUNNING
    done = subprocess.run(cmd + ["--resume", str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"run {state['run_id']} finished" in done.stdout  # (after MLflow's own "View run" links)
    c = tracking.client(mlflow_server.url)
    run = c.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and tracking.FAILURE_TAG not in run.data.tags
    # no finished epoch lost, none logged twice: the one whose metrics the dead server missed came from the checkpoint
    assert sorted(m.step for m in c.get_metric_history(state["run_id"], "train/lr")) == list(range(1, EPOCHS + 1))
    assert "eval/ssim" in run.data.metrics


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(mlflow_uri, tiny_overrides, monkeypatch,
                                                                       capsys):
    out = Path(tiny_overrides["runtime.out_dir"])
    settings = {**tiny_overrides, "optim.epochs": 3, "optim.decay_epochs": 0}
    real_save, writes, before = torch.save, [], {}

    def disk_fills_on_the_second_checkpoint(obj, f, *args, **kwargs):
        if ".checkpoint.pt." in str(f):
            writes.append(f)
            if len(writes) == 2:
                previous = Path(f).parent / checkpoint.CHECKPOINT
                before["sha"] = hashlib.sha256(previous.read_bytes()).hexdigest()
                Path(f).write_bytes(b"PK\x03\x04 part of a checkpoint")  # the disk filled mid-write
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_on_the_second_checkpoint)
    assert main(["train", FACADES, *sets(settings), "--no-progress"]) == 2
    folder = next(out.glob(f"facades/*/{checkpoint.CHECKPOINT}")).parent
    one_error_line(capsys.readouterr().err, str(folder / checkpoint.CHECKPOINT), "No space left on device",
                   "cannot write the checkpoint of epoch 2", "the checkpoint of epoch 1 is kept")
    assert hashlib.sha256((folder / checkpoint.CHECKPOINT).read_bytes()).hexdigest() == before["sha"]  # untouched
    assert checkpoint.load(folder / checkpoint.CHECKPOINT)["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # the partial file is gone
    run = tracking.client().get_run(checkpoint.load(folder / checkpoint.CHECKPOINT)["run_id"])
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags[tracking.FAILURE_TAG]

    monkeypatch.setattr(torch, "save", real_save)  # room again: the run goes on from epoch 1
    assert main(["train", FACADES, *sets(settings), "--resume", str(folder), "--no-progress"]) == 0
    assert checkpoint.load(folder / checkpoint.CHECKPOINT)["finished"]
    assert tracking.client().get_run(run.info.run_id).info.status == "FINISHED"


def test_save_atomic_removes_its_temporary_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    checkpoint.save_atomic({"a": torch.zeros(2)}, target)

    def interrupted(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_atomic({"a": torch.ones(2)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(checkpoint.load_plain(target, "test file")["a"], torch.zeros(2))


# ---------------------------------------------------------------- data that is not what it claims


@pytest.fixture
def lopsided(tmp_path) -> Path:
    """A dataset whose one image is 48x16: two halves of 24x16, not square."""
    for split in ("train", "test"):
        (tmp_path / "lopsided" / split).mkdir(parents=True)
        write_png(torch.full((3, 16, 48), 128, dtype=torch.uint8), str(tmp_path / "lopsided" / split / "1.png"))
    return tmp_path


def test_an_image_whose_halves_are_not_square_is_one_line_naming_it(lopsided, mlflow_uri, tiny_overrides, capsys):
    settings = {**tiny_overrides, "data.root": str(lopsided), "data.dataset": "lopsided"}
    assert main(["train", FACADES, *sets(settings), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, str(lopsided / "lopsided" / "train" / "1.png"), "48x16",
                   "not two square halves", "data.square_halves: false")
    assert not Path(tiny_overrides["runtime.out_dir"]).exists()  # stopped before any run was opened


def test_square_halves_false_splits_any_even_width(lopsided):
    cfg = DataConfig(root=str(lopsided), dataset="lopsided", square_halves=False, crop_size=16, load_size=16)
    pairs = data.load_pairs(cfg, "train", 16)
    assert pairs.pairs.shape == (1, 6, 16, 16)
    with pytest.raises(UserError, match="not two square halves"):
        data.load_pairs(DataConfig(root=str(lopsided), dataset="lopsided", crop_size=16, load_size=16), "train", 16)


def test_the_key_is_documented():
    assert "square_halves: true" in (ROOT / "experiments" / "facades.yaml").read_text()
    assert "data.square_halves" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("archive", ["not an archive", "truncated"])
def test_an_archive_that_cannot_be_unpacked_is_one_line_and_leaves_nothing(tmp_path, archive):
    import gzip
    import tarfile

    from p2p.download import download

    path = tmp_path / "facades.tar.gz"
    if archive == "not an archive":
        path.write_bytes(gzip.compress(b"<html>a login page, not the release</html>"))
    else:
        src = tmp_path / "src" / "facades" / "train"
        src.mkdir(parents=True)
        write_png(torch.randint(0, 255, (3, 64, 128), dtype=torch.uint8), str(src / "1.png"))
        with tarfile.open(path, "w:gz") as tar:
            tar.add(tmp_path / "src" / "facades", arcname="facades")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    root = tmp_path / "datasets"
    with pytest.raises(UserError, match="cannot unpack the archive") as err:
        download("facades", root, url=path.as_uri())
    assert "\n" not in str(err.value) and str(root / "facades") in str(err.value)
    assert list(root.iterdir()) == []  # no partial dataset, no temporary folder
