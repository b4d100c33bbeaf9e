"""Run configurations: frozen dataclasses holding the paper's defaults.

The CLI (``jaxmri.train``) only overrides fields; the resolved config is saved as ``config.json`` in the
run directory, so every run can be repeated from its own folder.

Where the paper is silent or contradicts itself, the choice is stated next to the field.
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from jaxmri.errors import RunDirError

DEFAULT_VGG19_WEIGHTS = "weights/vgg19_imagenet.safetensors"

# The valid values of the choice fields, in one place: the configs check them, the CLI offers them,
# and ``jaxmri.training.optim`` / ``jaxmri.training.losses`` dispatch on them.
ARCHS = ("cnn", "vgg19", "rescnn")  # SmallCNN (Table 2), VGG19Classifier (Section 2.2), ResCNN (ours, not the paper's)
PRETRAINED = ("imagenet", "none")
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("bce", "dice", "bce+dice")
SCHEDULES = ("constant", "cosine")  # learning rate over the run: the paper's constant, or cosine decay to 0


@dataclass(frozen=True)
class ClassifyConfig:
    """Classification (paper Section 2): SmallCNN (Table 2) or frozen VGG19, Adam (Table 3)."""

    arch: str = "cnn"  # "cnn" = SmallCNN (Table 2), "vgg19" = VGG19Classifier, "rescnn" = our ResCNN recipe
    data: str | None = None  # folder of class folders (yes/, no/); None = generated phantom set
    out: str | None = None  # run directory; None = runs/<time>-classify-<arch>
    epochs: int = 50  # Section 2.2: "We trained the model on 50 epochs"
    batch_size: int = 32  # not stated in the paper; PyTorch tutorials' usual 32
    lr: float = 1e-3  # Table 3 (the text says 0.01; the table's 0.001 is used)
    weight_decay: float = 4e-4  # Table 3, L2 added to the gradient as PyTorch's Adam does
    optimizer: str = "adam"  # "adam" (the paper) or "adamw" (decoupled decay)
    schedule: str = "constant"  # "constant" (the paper) or "cosine" (decay to 0 over the run; ours)
    label_smoothing: float = 0.0  # 0 = the paper's plain cross-entropy; e.g. 0.1 (ours)
    tta: bool = False  # test-time flip averaging: logits of image and mirror image averaged (ours)
    devices: int = 0  # data-parallel over this many devices (0 = all visible; jaxmri.training.parallel)
    seed: int = 0
    image_size: int = 224  # Section 2.1: resized to (224, 224)
    max_angle: float = 15.0  # rotation range in degrees; the paper does not give one
    test_fraction: float = 0.27  # Table 1: 72 of 273 images are test (26.4%)
    val_fraction: float = 0.15  # of the training part; the paper's future work (held-out validation)
    pretrained: str = "imagenet"  # vgg19 only: "imagenet" (the paper) or "none" (random-init backbone)
    weights: str = DEFAULT_VGG19_WEIGHTS  # converted ImageNet weights (python -m jaxmri.weights)
    skip_unreadable: bool = False  # train on the readable files instead of stopping at bad ones
    overwrite: bool = False  # allow writing into a non-empty run directory

    def __post_init__(self):
        _check_common(self)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("pretrained", self.pretrained, PRETRAINED)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.image_size % 4 or self.image_size < 32:
            raise ValueError(f"--image-size must be a multiple of 4 and at least 32, got {self.image_size}.")


@dataclass(frozen=True)
class SegmentConfig:
    """Segmentation (paper Section 3): U-Net (Table 5, corrected), Adam lr 1e-3, pixel cross-entropy."""

    data: str | None = None  # folder of class folders; the annotated images live in yes/
    masks: str | None = None  # COCO .json, Labelbox .json/.ndjson, or a folder of PNG masks
    out: str | None = None  # run directory; None = runs/<time>-segment
    epochs: int = 30  # the paper ran 2 and 10; a short CPU run (README: 150 at 128x128 does better)
    batch_size: int = 4
    lr: float = 1e-3  # Table 5 caption
    weight_decay: float = 0.0  # the paper gives none for the U-Net
    optimizer: str = "adam"
    schedule: str = "constant"
    devices: int = 0
    loss: str = "bce"  # "bce" (the paper's cross-entropy), "dice", "bce+dice"
    width: int = 32  # base filters; 64 = the paper, 32 fits a CPU budget
    seed: int = 0
    image_size: int = 256  # Table 5 input 256x256x1 (Section 3.1 says 572); 128 = 4x cheaper steps
    max_angle: float = 15.0
    test_fraction: float = 0.27
    val_fraction: float = 0.15
    negatives: int = 0  # how many no/ images to add as all-background masks
    train_fraction: float = 1.0  # share of the training part's groups used; Section 3.2 also trains on a third
    threshold: float = 0.5  # probability above which a pixel counts as tumor
    skip_unreadable: bool = False
    overwrite: bool = False

    def __post_init__(self):
        _check_common(self)
        _check_choice("loss", self.loss, LOSSES)
        if self.width < 1:
            raise ValueError(f"--width must be a positive number of filters, got {self.width}.")
        if self.image_size % 16 or self.image_size < 16:
            raise ValueError(f"--image-size must be a multiple of 16 (four 2x2 poolings), got {self.image_size}.")
        if self.negatives < 0:
            raise ValueError(f"--negatives must be 0 or more, got {self.negatives}.")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"--train-fraction must be in (0, 1], got {self.train_fraction}.")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"--threshold must be between 0 and 1, got {self.threshold}.")


def _check_common(cfg) -> None:
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{field.name.replace('_', '-')} must be a finite number, got {value}.")
    if cfg.devices < 0:
        raise ValueError(f"--devices must be 0 (all) or a positive number, got {cfg.devices}.")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {cfg.epochs}.")
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {cfg.batch_size}.")
    if cfg.lr <= 0:
        raise ValueError(f"--lr must be positive, got {cfg.lr}.")
    if cfg.weight_decay < 0:
        raise ValueError(f"--weight-decay must be 0 or more, got {cfg.weight_decay}.")
    _check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _check_choice("schedule", cfg.schedule, SCHEDULES)
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be between 0 and 1, got {cfg.test_fraction}.")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}.")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise ValueError(f"--{name.replace('_', '-')} must be {listed}, got {value!r}.")


def save_config(cfg, path: Path) -> None:
    """Write the resolved config as JSON (with its class name, so it can be read back)."""
    payload = {"kind": type(cfg).__name__, **dataclasses.asdict(cfg)}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def _fits(value, default) -> bool:
    """Whether a config.json value has the type of its field (known by the field's default)."""
    if default is None:
        return value is None or isinstance(value, str)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default)) and not isinstance(value, bool)


CONFIGS = {cls.__name__: cls for cls in (ClassifyConfig, SegmentConfig)}


def load_config(path: Path):
    """Read a ``config.json`` written by ``save_config`` back into its dataclass.

    Raises ``RunDirError`` (one line naming the file) when it is missing, is not JSON, was not written
    by jaxmri, names fields this version does not know, or holds a value the config refuses.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such file; pass the config.json of a run written by python -m jaxmri.train.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path}: cannot be read as JSON ({err}); pass the config.json of a jaxmri run.") from None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in CONFIGS:
        raise RunDirError(f"{path}: not a jaxmri run config (no \"kind\" of {sorted(CONFIGS)}); pass the config.json "
                          "of a run written by python -m jaxmri.train.")
    cls = CONFIGS[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in payload.items() if k != "kind"}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise RunDirError(f"{path}: unknown {kind} fields {unknown}; was it written by another jaxmri version?")
    for field in dataclasses.fields(cls):
        if field.name in values and not _fits(values[field.name], field.default):
            raise RunDirError(f"{path}: {field.name} is {values[field.name]!r}, which is not a "
                              f"{type(field.default).__name__ if field.default is not None else 'path or null'}; "
                              "fix the value or pass the config.json of a jaxmri run.")
        if field.name in values and isinstance(field.default, float):
            values[field.name] = float(values[field.name])  # JSON writes 0.0 as 0 in some tools
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{path}: {err}") from None
