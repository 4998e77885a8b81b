"""Run by tests/test_numerics.py in a fresh process with the CPU kernels pinned: prints JSON with
the SHA-256 of a tiny deterministic run's final generator weights and the scores of fixed images."""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch


def main(data_root: str) -> None:
    from p2p import checkpoint, data
    from p2p.config import DataConfig
    from p2p.metrics import ScoreSettings, score_images
    from p2p.trainer import train
    from tests.conftest import TINY, facades_config

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {**TINY, "data.root": data_root, "runtime.out_dir": f"{tmp}/runs", "runtime.deterministic": True,
                     "runtime.device": "cpu",  # a CPU golden, also on a machine with a GPU
                     "tricks.label_smoothing": [0.8, 1.0], "tricks.label_flip": 0.2, "tricks.instance_noise": 0.1,
                     "tricks.image_pool": 2, "eval.every": 1, "eval.every_max_images": 2}
        import os

        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        result = train(facades_config(overrides), run_dir=Path(tmp) / "run", progress=False)
        state = checkpoint.load(result.run_dir / checkpoint.GENERATOR)["generator"]
        sha = hashlib.sha256()
        for key in sorted(state):
            sha.update(key.encode())
            sha.update(state[key].contiguous().numpy().tobytes())
        pairs = data.load_eval(DataConfig(root=data_root, direction="BtoA", crop_size=64), "test", max_images=6)
        inputs, targets = pairs.split(pairs.pairs)
        blurred = torch.nn.functional.avg_pool2d(targets.float(), 3, 1, 1).round().to(torch.uint8)
        scores = score_images(blurred, targets, ScoreSettings(metrics=("ssim", "psnr", "l1")))
    print(json.dumps({"generator_sha256": sha.hexdigest(), "scores": scores, "train_scores": result.scores}))


if __name__ == "__main__":
    main(sys.argv[1])
