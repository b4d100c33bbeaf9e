"""A trained run, loaded back: its config, its model with the best checkpoint, and its class names.

``load_run(RUN_DIR)`` works on any directory that ``python -m jaxmri.train`` wrote: it rebuilds the
model from the run's own ``config.json`` with the same builder training used (abstractly, with
``nnx.eval_shape``: no initialisation, no ImageNet file needed, since the checkpoint holds every
weight) and restores ``checkpoint/`` into it. Anything that does not fit is one ``RunDirError`` line.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from jaxmri.config import ClassifyConfig, SegmentConfig, load_config
from jaxmri.errors import DataError, RunDirError
from jaxmri.training import classify, segment
from jaxmri.training.rundir import restore_checkpoint


@dataclass(frozen=True, eq=False)
class Run:
    """A loaded run: ``task`` is "classify" or "segment"; ``model`` is in eval mode."""

    path: Path
    cfg: ClassifyConfig | SegmentConfig
    model: nnx.Module
    class_names: tuple[str, ...]

    @property
    def task(self) -> str:
        return "classify" if isinstance(self.cfg, ClassifyConfig) else "segment"

    def require_classifier(self, what: str) -> None:
        """Raise ``DataError`` naming ``what`` (e.g. "--explain") unless this is a classifier run."""
        if self.task != "classify":
            raise DataError(f"--run {self.path} is a U-Net (segment) run; {what} needs a classifier.")

    @property
    def channels(self) -> int:
        """The input channels the model takes: 3 (RGB) for the classifiers, 1 (gray) for the U-Net."""
        return 3 if self.task == "classify" else 1


def _class_names(path: Path) -> tuple[str, ...]:
    try:
        names = json.loads((path / "split.json").read_text())["class_names"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RunDirError(f"{path / 'split.json'}: missing or not written by this jaxmri version; retrain the run "
                          "with python -m jaxmri.train.") from None
    return tuple(str(name) for name in names)


def load_run(path) -> Run:
    """Rebuild and restore the run in ``path``; raises ``RunDirError`` naming what is wrong."""
    path = Path(path)
    if path.is_file():
        raise RunDirError(f"--run {path} is a file, not a run directory; pass the folder that python -m jaxmri.train "
                          "wrote (the one holding config.json and checkpoint/).")
    if not path.is_dir():
        raise RunDirError(f"--run {path}: no such run directory; pass a folder written by python -m jaxmri.train.")
    if not (path / "config.json").is_file():
        raise RunDirError(f"--run {path}: no config.json, so not a jaxmri run directory; pass a folder written by "
                          "python -m jaxmri.train.")
    cfg = load_config(path / "config.json")
    if not (path / "checkpoint").is_dir():
        raise RunDirError(f"--run {path}: no checkpoint/ (the run stopped before its first epoch ended); train it again.")
    class_names = _class_names(path)
    key = jax.random.key(0)  # any key: every value is replaced by the checkpoint's
    if isinstance(cfg, ClassifyConfig):
        # The checkpoint holds the whole network, so the backbone is built without reading ImageNet weights.
        cfg_arch = dataclasses.replace(cfg, pretrained="none")
        model = nnx.eval_shape(lambda: classify.build_model(cfg_arch, len(class_names), key)[0])
    else:
        model = nnx.eval_shape(lambda: segment.build_model(cfg, key))
    try:
        restore_checkpoint(path / "checkpoint", model)
    except Exception as err:  # orbax reports a shape or tree mismatch with its own (long) message types
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise RunDirError(f"--run {path}: checkpoint/ does not match the model that config.json describes ({detail}); "
                          "was config.json edited or copied from another run?") from None
    model.eval()
    return Run(path=path, cfg=cfg, model=model, class_names=class_names)
