"""Run configuration: YAML -> typed, frozen dataclasses (the schema), with scale overlays and dotted overrides.

`load_config(path, overrides)` is the only way a RunConfig is made from a file. The schema engine
(`p2p.schema`) checks every key against the types and bounds declared on the fields below, so a
typo, a wrong type or a value out of range is an error that names the key and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from p2p import contract
from p2p.errors import UserError
from p2p.models import geometry, registry
from p2p.names import NAME, is_name
from p2p.schema import Invalid, apply_overrides, build, deep_merge, entry, flatten, load_yaml, parse_override, plain

__all__ = ["DataConfig", "GeneratorConfig", "DiscriminatorConfig", "ModelConfig", "LossConfig", "TricksConfig",
           "OptimConfig", "EvalConfig", "RuntimeConfig", "RunConfig", "load_config", "config_from_dict", "replace",
           "to_dict", "flatten", "dump_yaml", "parse_override", "load_yaml", "data_root"]

Direction = Literal["AtoB", "BtoA"]
Norm = Literal["batch", "instance", "none"]


@dataclass(frozen=True)
class DataConfig:
    root: Optional[str] = None  # None: $P2P_DATA_ROOT, else ./datasets
    dataset: str = entry("facades", check=is_name, expected=NAME)  # a folder under root; in cache file names
    direction: Direction = "AtoB"
    task: Literal["aligned", "colorization"] = "aligned"
    # colorization reads the photo from the target half of an aligned pair,
    # or from the whole file when layout is "single".
    layout: Literal["aligned", "single"] = "aligned"
    load_size: int = 286
    crop_size: int = entry(256, ge=16)
    flip: bool = True
    max_images: Optional[int] = entry(None, ge=1)
    # Each half of an aligned A|B image is square (width = 2 x height), as in the pix2pix releases: any
    # other image is an error naming the file. false: split any even width in two and resize each half.
    square_halves: bool = True

    @property
    def in_channels(self) -> int:
        """The input's channels: 1 (grayscale) for colorization, else 3 (the data and the networks read this)."""
        return 1 if self.task == "colorization" else 3

    def check(self) -> None:
        if self.load_size < self.crop_size:
            raise Invalid("load_size", f"an integer >= data.crop_size ({self.crop_size})", self.load_size)
        if self.task == "aligned" and self.layout == "single":
            raise Invalid("layout", "'aligned' for the aligned task (single images only make sense for colorization)",
                          self.layout)


@dataclass(frozen=True)
class GeneratorConfig:
    arch: str = "unet"  # a registered generator (p2p.models.registry; `p2p describe --list-models`)
    ngf: int = entry(64, ge=1)
    norm: Norm = "batch"
    dropout: float = entry(0.5, ge=0, lt=1, noun="a rate")
    # U-Net decoder blocks holding dropout: "paper" = the three innermost (the paper and its Lua code),
    # "reference" = the ngf*8 blocks just outside the innermost (junyanz/pytorch-CycleGAN-and-pix2pix)
    dropout_at: Literal["paper", "reference"] = "paper"

    def check(self) -> None:
        if self.arch not in registry.GENERATORS:
            raise Invalid("arch", "one of the registered generators " + registry.known(registry.generator_names())
                          + " (p2p describe --list-models)", self.arch)
        if self.dropout_at != "paper" and not registry.generator(self.arch).encoder_decoder:
            raise Invalid("dropout_at", f"'paper' for the {self.arch} generator (its dropout is in every residual "
                          "block)", self.dropout_at)


@dataclass(frozen=True)
class DiscriminatorConfig:
    patch: Optional[int] = 70  # receptive field: 1, 16, 70 or 286
    ndf: int = entry(64, ge=1)
    norm: Norm = "batch"
    n_layers: Optional[int] = entry(None, ge=0, note="0 = PixelGAN")  # explicit depth; overrides `patch`

    def check(self) -> None:
        if self.n_layers is None and self.patch not in geometry.PATCH_TO_LAYERS:
            raise Invalid("patch", "one of " + ", ".join(map(str, geometry.PATCH_TO_LAYERS))
                          + " (or set model.discriminator.n_layers)", self.patch)

    @property
    def layers(self) -> int:
        """Stride-2 layers of the PatchGAN (0: the PixelGAN)."""
        return geometry.discriminator_layers(self.patch, self.n_layers)


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = entry(factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = entry(factory=DiscriminatorConfig)
    init_gain: float = 0.02  # weights ~ N(0, init_gain)


@dataclass(frozen=True)
class LossConfig:
    gan: Literal["none", "vanilla", "lsgan"] = "vanilla"
    conditional: bool = True
    l1: float = entry(100.0, ge=0, noun="a weight")
    d_scale: float = entry(0.5, gt=0, noun="a weight")  # the paper halves D's objective to slow D down

    def check(self) -> None:
        if self.gan == "none" and self.l1 == 0:
            raise Invalid("l1", "a weight > 0 when loss.gan is none (there would be no objective)", self.l1)


@dataclass(frozen=True)
class TricksConfig:
    label_smoothing: Optional[tuple[float, float]] = entry(
        None, check=lambda v: 0.0 <= v[0] <= v[1], expected="null or [low, high] with 0 <= low <= high")
    label_flip: float = entry(0.0, ge=0, le=1, noun="a probability")
    instance_noise: float = entry(0.0, ge=0, noun="a standard deviation")
    instance_noise_epochs: int = entry(0, ge=0, note="0 = decay over the whole run")
    image_pool: int = entry(0, ge=0)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = entry(2e-4, gt=0, noun="a learning rate")
    beta1: float = entry(0.5, ge=0, lt=1, noun="a value")
    beta2: float = entry(0.999, ge=0, lt=1, noun="a value")
    epochs: int = entry(100, ge=0)
    decay_epochs: int = entry(100, ge=0)
    batch_size: int = entry(1, ge=1)

    @property
    def total_epochs(self) -> int:
        """Epochs at the constant rate plus epochs of decay: how long a run of this config trains."""
        return self.epochs + self.decay_epochs

    def check(self) -> None:
        if self.total_epochs < 1:
            raise Invalid("epochs", "epochs >= 0 and decay_epochs >= 0 with at least one epoch in all", self.epochs)


@dataclass(frozen=True)
class EvalConfig:
    split: str = entry("test", check=is_name, expected=NAME)  # a folder under data.root/data.dataset
    every: int = entry(0, ge=0)  # score every N epochs as well as at the end (0: only at the end)
    every_max_images: Optional[int] = entry(None, ge=1)  # images scored at those intermediate points (None: as at the end)
    metrics: tuple[str, ...] = entry(contract.DEFAULT_METRICS, check=lambda v: set(v) <= set(contract.METRICS),
                                     expected="a list from " + ", ".join(contract.METRICS))
    g_mode: Literal["train", "eval"] = "train"
    max_images: Optional[int] = entry(None, ge=1)
    batch_size: int = entry(8, ge=1)
    weights_dir: Optional[str] = None  # None: $P2P_WEIGHTS_DIR, else torchvision's download
    cache_dir: Optional[str] = None  # fitted FCN scorers: None: $P2P_CACHE_DIR, else .cache/p2p
    fcn_fit_missing: bool = True  # fit the FCN scorer when it is not cached yet (false: stop with an error)
    samples: int = entry(4, ge=0)  # test images in the logged sample grids

    def due(self, done: int, total: int) -> bool:
        """Whether a run of `total` epochs scores after its epoch `done` (counted from 1): every `every`
        epochs, and always after the last."""
        return bool(self.every and done % self.every == 0) or done == total

    def passes(self, total: int) -> int:
        """How many scoring passes a run of `total` epochs makes."""
        return sum(self.due(done, total) for done in range(1, total + 1))


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = entry(0, ge=0, note="0 = torch's default")
    # auto: bf16 where the hardware runs it natively (CUDA, or a CPU with AVX512-BF16/AMX), else fp32
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    deterministic: bool = False
    out_dir: str = "runs"
    log_every: int = entry(50, ge=1)  # steps between loss checks (the only host syncs in an epoch)
    # the training step as one CUDA graph (p2p.step): auto = on for CUDA wherever the config allows it, if
    # p2p.step.GRAPH_VERIFIED_ON_GPU; false = eager; true = on (an error where the config cannot be captured)
    cuda_graph: Literal["auto", True, False] = "auto"
    compile: bool = False  # torch.compile G and D (inductor's fused kernels; inside the graph when there is one)
    channels_last: bool = False
    malloc_tuning: bool = True  # keep freed activations in the heap instead of returning them to the OS


@dataclass(frozen=True)
class RunConfig:
    name: str = entry("pix2pix", check=is_name, expected=NAME)  # the run folder: runtime.out_dir/name/<run id>
    experiment: str = entry("default", check=is_name, expected=NAME)  # MLflow experiment for single runs
    seed: int = entry(0, ge=0)
    data: DataConfig = entry(factory=DataConfig)
    model: ModelConfig = entry(factory=ModelConfig)
    loss: LossConfig = entry(factory=LossConfig)
    tricks: TricksConfig = entry(factory=TricksConfig)
    optim: OptimConfig = entry(factory=OptimConfig)
    eval: EvalConfig = entry(factory=EvalConfig)
    runtime: RuntimeConfig = entry(factory=RuntimeConfig)

    def check(self) -> None:
        """What the networks need of the crop (p2p.models.geometry)."""
        crop = self.data.crop_size
        problem = geometry.generator_crop_problem(self.model.generator.arch, crop)
        if problem is None and self.loss.gan != "none":
            problem = geometry.discriminator_crop_problem(crop, self.model.discriminator.layers)
        if problem is not None:
            raise Invalid("data.crop_size", problem, crop)


# ---------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: dict[str, Any] | list[str] | None = None,
                scale: str | None = None) -> RunConfig:
    """Read a run config, lay a scale overlay on it, apply `--set` overrides, and check it against the schema.

    `scale` is a name (`cpu`, `paper`: `scales/NAME.yaml` beside the config) or a path to an overlay.
    """
    path = Path(path)
    data = resolve_includes(load_yaml(path), path.resolve())
    if scale:
        data = deep_merge(data, load_scale(scale, path))
    return config_from_dict(apply_overrides(data, overrides), source=str(path))


def resolve_includes(data: dict, path: Path, included: tuple[Path, ...] = ()) -> dict:
    """`base: other.yaml` pulls in another file (relative to this one) underneath; a loop of bases is an error."""
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or "\0" in base:
        raise UserError(f"{path}: key 'base' expected a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in (*included, path):
        raise UserError(f"{path}: key 'base' names {base_path}, which is already being read (a loop of bases)")
    base_data = resolve_includes(load_yaml(base_path), base_path, (*included, path))
    return deep_merge(base_data, data)


def scale_path(scale: str, config_path: Path) -> Path:
    candidate = Path(scale)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    for folder in (config_path.resolve().parent, config_path.resolve().parent.parent / "experiments",
                   Path("experiments")):
        if (folder / "scales" / f"{scale}.yaml").is_file():
            return folder / "scales" / f"{scale}.yaml"
    raise UserError(f"scale '{scale}': no scales/{scale}.yaml beside {config_path} (expected cpu or paper)")


def load_scale(scale: str, config_path: Path) -> dict:
    path = scale_path(scale, config_path)
    return resolve_includes(load_yaml(path), path.resolve())


def config_from_dict(data: dict, source: str = "<config>") -> RunConfig:
    return build(RunConfig, data, source)


# ---------------------------------------------------------------- output


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), suitable for YAML."""
    return plain(cfg)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def replace(cfg: RunConfig, overrides: dict[str, Any], source: str = "<overrides>") -> RunConfig:
    """A new validated config with dotted overrides applied."""
    return config_from_dict(apply_overrides(to_dict(cfg), overrides), source=source)


def with_worker_threads(cfg: RunConfig, threads: int, source: str = "<overrides>") -> RunConfig:
    """`threads` (when > 0), a sweep worker's share of the cores, as `runtime.threads` unless the config set it."""
    return replace(cfg, {"runtime.threads": threads}, source=source) if threads and cfg.runtime.threads == 0 else cfg


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root or os.environ.get("P2P_DATA_ROOT") or "datasets")
