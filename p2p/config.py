"""Run configuration: YAML -> typed, frozen dataclasses, with dotted overrides.

`load_config(path, overrides)` is the only way a RunConfig is made from a file;
every key is checked against the dataclass types below, so a typo or a wrong
type is an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from p2p.errors import UserError

Direction = Literal["AtoB", "BtoA"]
Norm = Literal["batch", "instance", "none"]


@dataclass(frozen=True)
class DataConfig:
    root: Optional[str] = None  # None: $P2P_DATA_ROOT, else ./datasets
    dataset: str = "facades"
    direction: Direction = "AtoB"
    task: Literal["aligned", "colorization"] = "aligned"
    # colorization reads the photo from the target half of an aligned pair,
    # or from the whole file when layout is "single".
    layout: Literal["aligned", "single"] = "aligned"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    max_images: Optional[int] = None
    # Each half of an aligned A|B image is square (width = 2 x height), as in the pix2pix releases: any
    # other image is an error naming the file. false: split any even width in two and resize each half.
    square_halves: bool = True


@dataclass(frozen=True)
class GeneratorConfig:
    arch: Literal["unet", "encoder_decoder", "resnet_6blocks", "resnet_9blocks"] = "unet"
    ngf: int = 64
    norm: Norm = "batch"
    dropout: float = 0.5
    # U-Net decoder blocks holding dropout: "paper" = the three innermost (the paper and its Lua code),
    # "reference" = the ngf*8 blocks just outside the innermost (junyanz/pytorch-CycleGAN-and-pix2pix)
    dropout_at: Literal["paper", "reference"] = "paper"


@dataclass(frozen=True)
class DiscriminatorConfig:
    patch: Optional[int] = 70  # receptive field: 1, 16, 70 or 286
    ndf: int = 64
    norm: Norm = "batch"
    n_layers: Optional[int] = None  # explicit depth; overrides `patch`


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    init_gain: float = 0.02  # weights ~ N(0, init_gain)


@dataclass(frozen=True)
class LossConfig:
    gan: Literal["none", "vanilla", "lsgan"] = "vanilla"
    conditional: bool = True
    l1: float = 100.0
    d_scale: float = 0.5  # the paper halves D's objective to slow D down


@dataclass(frozen=True)
class TricksConfig:
    label_smoothing: Optional[tuple[float, float]] = None
    label_flip: float = 0.0
    instance_noise: float = 0.0
    instance_noise_epochs: int = 0  # 0: decay over the whole run
    image_pool: int = 0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs: int = 100
    decay_epochs: int = 100
    batch_size: int = 1


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    every: int = 0  # score every N epochs as well as at the end (0: only at the end)
    every_max_images: Optional[int] = None  # images scored at those intermediate points (None: as at the end)
    metrics: tuple[str, ...] = ("fcn", "lpips", "ssim", "psnr", "l1")
    g_mode: Literal["train", "eval"] = "train"
    max_images: Optional[int] = None
    batch_size: int = 8
    weights_dir: Optional[str] = None  # None: $P2P_WEIGHTS_DIR, else torchvision's download
    cache_dir: Optional[str] = None  # fitted FCN scorers: None: $P2P_CACHE_DIR, else .cache/p2p
    fcn_fit_missing: bool = True  # fit the FCN scorer when it is not cached yet (false: stop with an error)
    samples: int = 4  # test images in the logged sample grids


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # 0: torch's default
    # auto: bf16 where the hardware runs it natively (CUDA, or a CPU with AVX512-BF16/AMX), else fp32
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    deterministic: bool = False
    out_dir: str = "runs"
    log_every: int = 50  # steps between loss checks (the only host syncs in an epoch)
    compile: bool = False  # torch.compile G and D (CUDA graphs on GPUs: no launch overhead at batch 1)
    channels_last: bool = False
    malloc_tuning: bool = True  # keep freed activations in the heap instead of returning them to the OS


@dataclass(frozen=True)
class RunConfig:
    name: str = "pix2pix"
    experiment: str = "default"  # MLflow experiment for single runs
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    tricks: TricksConfig = field(default_factory=TricksConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


KNOWN_METRICS = ("fcn", "lpips", "ssim", "psnr", "l1", "kid", "fid")  # kid, fid: off by default (slow on a CPU)
PATCH_TO_LAYERS = {16: 1, 70: 3, 286: 5}  # receptive field -> strided layers; 1 is PixelGAN


# ---------------------------------------------------------------- loading


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return data


def resolve_includes(data: dict, path: Path) -> dict:
    """`base: other.yaml` pulls in another file (relative to this one) underneath."""
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"{path}: key 'base' expected a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    base_data = resolve_includes(load_yaml(base_path), base_path)
    return deep_merge(base_data, data)


def deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (so 1e-4, true, null, [0.8, 1.0] are typed)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> dict:
    data = dict(data)
    head, _, rest = key.partition(".")
    if rest:
        child = data.get(head)
        data[head] = set_dotted(child if isinstance(child, dict) else {}, rest, value)
    else:
        data[head] = value
    return data


def apply_overrides(data: dict, overrides: dict[str, Any] | list[str] | None) -> dict:
    if not overrides:
        return data
    pairs = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in pairs:
        data = set_dotted(data, key, value)
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | list[str] | None = None,
                scale: str | None = None) -> RunConfig:
    """Read a run config, lay a scale overlay on it, apply `--set` overrides, type-check and validate.

    `scale` is a name (`cpu`, `paper`: `scales/NAME.yaml` beside the config) or a path to an overlay.
    """
    path = Path(path)
    data = resolve_includes(load_yaml(path), path.resolve())
    if scale:
        data = deep_merge(data, load_scale(scale, path))
    data = apply_overrides(data, overrides)
    cfg = from_dict(RunConfig, data, source=str(path))
    validate(cfg, source=str(path))
    return cfg


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
    cfg = from_dict(RunConfig, data, source=source)
    validate(cfg, source=source)
    return cfg


# ---------------------------------------------------------------- typing


def from_dict(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise UserError(f"{source}: key '{where}' expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise UserError(
                f"{source}: unknown key '{prefix}{key}' (expected one of: {', '.join(sorted(names))})"
            )
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = coerce(hints[f.name], data[f.name], source, prefix + f.name)
    return cls(**values)


def coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> typing.NoReturn:
        raise UserError(f"{source}: key '{key}' expected {expected}, got {value!r}")

    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return coerce(inner[0], value, source, key)
        fail(" or ".join(str(a) for a in inner))
    if origin is Literal:
        if value in args:
            return value
        fail("one of " + ", ".join(repr(a) for a in args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail("an integer")
    if tp is float:
        if isinstance(value, str):
            value = _float_literal(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        fail("a string")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        fail("a mapping")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(f"a list of {len(args)} values")
        return tuple(coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module, not user input


def _float_literal(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


# ---------------------------------------------------------------- validation


def validate(cfg: RunConfig, source: str) -> None:
    def bad(key: str, expected: str, got: Any) -> typing.NoReturn:
        raise UserError(f"{source}: key '{key}' expected {expected}, got {got!r}")

    d, g, disc = cfg.data, cfg.model.generator, cfg.model.discriminator
    if d.crop_size < 16:
        bad("data.crop_size", "an integer >= 16", d.crop_size)
    if d.load_size < d.crop_size:
        bad("data.load_size", f"an integer >= data.crop_size ({d.crop_size})", d.load_size)
    if d.max_images is not None and d.max_images < 1:
        bad("data.max_images", "null or an integer >= 1", d.max_images)
    if d.task == "aligned" and d.layout == "single":
        bad("data.layout", "'aligned' for the aligned task (single images only make sense for colorization)", d.layout)
    if g.arch in ("unet", "encoder_decoder"):
        if d.crop_size < 32 or d.crop_size & (d.crop_size - 1):
            bad("data.crop_size", f"a power of two >= 32 for the {g.arch} generator", d.crop_size)
    elif d.crop_size % 4:
        bad("data.crop_size", f"a multiple of 4 for the {g.arch} generator", d.crop_size)
    if g.ngf < 1:
        bad("model.generator.ngf", "an integer >= 1", g.ngf)
    if not 0.0 <= g.dropout < 1.0:
        bad("model.generator.dropout", "a rate in [0, 1)", g.dropout)
    if g.dropout_at != "paper" and g.arch not in ("unet", "encoder_decoder"):
        bad("model.generator.dropout_at", f"'paper' for the {g.arch} generator (its dropout is in every residual block)",
            g.dropout_at)
    if disc.ndf < 1:
        bad("model.discriminator.ndf", "an integer >= 1", disc.ndf)
    if disc.n_layers is None:
        if disc.patch not in (1, *PATCH_TO_LAYERS):
            bad("model.discriminator.patch", "one of 1, 16, 70, 286 (or set model.discriminator.n_layers)", disc.patch)
    elif disc.n_layers < 0:
        bad("model.discriminator.n_layers", "an integer >= 0 (0 = PixelGAN)", disc.n_layers)
    if cfg.loss.gan != "none":
        need = min_crop_for_discriminator(discriminator_layers(disc))
        if d.crop_size < need:
            rf = receptive_field_of_layers(discriminator_layers(disc))
            bad("data.crop_size", f"at least {need} for a {rf}x{rf} discriminator", d.crop_size)
    if cfg.loss.l1 < 0:
        bad("loss.l1", "a weight >= 0", cfg.loss.l1)
    if cfg.loss.gan == "none" and cfg.loss.l1 == 0:
        bad("loss.l1", "a weight > 0 when loss.gan is none (there would be no objective)", cfg.loss.l1)
    if cfg.loss.d_scale <= 0:
        bad("loss.d_scale", "a weight > 0", cfg.loss.d_scale)
    t = cfg.tricks
    if t.label_smoothing is not None:
        low, high = t.label_smoothing
        if not (0.0 <= low <= high):
            bad("tricks.label_smoothing", "null or [low, high] with 0 <= low <= high", list(t.label_smoothing))
    if not 0.0 <= t.label_flip <= 1.0:
        bad("tricks.label_flip", "a probability in [0, 1]", t.label_flip)
    if t.instance_noise < 0:
        bad("tricks.instance_noise", "a standard deviation >= 0", t.instance_noise)
    if t.instance_noise_epochs < 0:
        bad("tricks.instance_noise_epochs", "an integer >= 0", t.instance_noise_epochs)
    if t.image_pool < 0:
        bad("tricks.image_pool", "an integer >= 0", t.image_pool)
    o = cfg.optim
    if o.lr <= 0:
        bad("optim.lr", "a learning rate > 0", o.lr)
    for key, value in (("optim.beta1", o.beta1), ("optim.beta2", o.beta2)):
        if not 0.0 <= value < 1.0:
            bad(key, "a value in [0, 1)", value)
    if o.epochs < 0 or o.decay_epochs < 0 or o.epochs + o.decay_epochs < 1:
        bad("optim.epochs", "epochs >= 0 and decay_epochs >= 0 with at least one epoch in all", o.epochs)
    if o.batch_size < 1:
        bad("optim.batch_size", "an integer >= 1", o.batch_size)
    e = cfg.eval
    for metric in e.metrics:
        if metric not in KNOWN_METRICS:
            bad("eval.metrics", "a list from " + ", ".join(KNOWN_METRICS), list(e.metrics))
    if e.every < 0:
        bad("eval.every", "an integer >= 0", e.every)
    if e.max_images is not None and e.max_images < 1:
        bad("eval.max_images", "null or an integer >= 1", e.max_images)
    if e.every_max_images is not None and e.every_max_images < 1:
        bad("eval.every_max_images", "null or an integer >= 1", e.every_max_images)
    if e.batch_size < 1:
        bad("eval.batch_size", "an integer >= 1", e.batch_size)
    if e.samples < 0:
        bad("eval.samples", "an integer >= 0", e.samples)
    if cfg.runtime.threads < 0:
        bad("runtime.threads", "an integer >= 0 (0 = torch's default)", cfg.runtime.threads)
    if cfg.runtime.log_every < 1:
        bad("runtime.log_every", "an integer >= 1", cfg.runtime.log_every)
    if cfg.seed < 0:
        bad("seed", "an integer >= 0", cfg.seed)


def discriminator_layers(disc: DiscriminatorConfig) -> int:
    """Number of stride-2 layers; 0 means the PixelGAN (1x1 convolutions)."""
    if disc.n_layers is not None:
        return disc.n_layers
    return 0 if disc.patch == 1 else PATCH_TO_LAYERS[disc.patch]


def receptive_field_of_layers(n_layers: int) -> int:
    # n strided 4x4 convs, then two 4x4 stride-1 convs: 1 + 3(2^n - 1) + 2*3*2^n
    return 1 if n_layers == 0 else 9 * 2**n_layers - 2


def min_crop_for_discriminator(n_layers: int) -> int:
    """Smallest power-of-two crop that leaves the PatchGAN at least one output unit."""
    if n_layers == 0:
        return 1
    size = 1
    while patch_output_size(size, n_layers) < 1:
        size *= 2
    return size


def patch_output_size(size: int, n_layers: int) -> int:
    if n_layers == 0:
        return size
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    for _ in range(2):
        size = size + 2 - 4 + 1
    return size


# ---------------------------------------------------------------- output


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), suitable for YAML."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys, as MLflow params: {'model.discriminator.patch': 70, ...}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def replace(cfg: RunConfig, overrides: dict[str, Any], source: str = "<overrides>") -> RunConfig:
    """A new validated config with dotted overrides applied."""
    return config_from_dict(apply_overrides(to_dict(cfg), overrides), source=source)


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root or os.environ.get("P2P_DATA_ROOT") or "datasets")
