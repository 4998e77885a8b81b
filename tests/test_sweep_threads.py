"""A sweep keeps both cores busy to its end: this machine's cores are split among its worker processes that run
trials (a worker holding a pack of trials counts once)."""

import optuna
from optuna.trial import TrialState

from p2p.sweep import study as studies
from p2p.sweep.worker import cores_per_local_worker


def test_cores_are_split_among_this_machines_running_trials(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    study = optuna.create_study()
    here = studies.worker_name().split(":")[0]

    def running(worker: str):
        trial = study.ask()
        trial.set_user_attr(studies.WORKER, worker)
        return trial

    first = running(f"{here}:1")
    assert cores_per_local_worker(study) == 4  # alone on the machine: every core
    running(f"{here}:2")
    running("elsewhere:3")  # another machine's trial takes none of these cores
    assert cores_per_local_worker(study) == 2
    packed = running(f"{here}:2")  # a second trial packed into worker 2's process: still two processes
    assert cores_per_local_worker(study) == 2
    study.tell(first, 1.0)
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 3
    assert cores_per_local_worker(study) == 4  # the last local worker takes over the finished one's cores
    study.tell(packed, 1.0)
    assert cores_per_local_worker(study) == 4
