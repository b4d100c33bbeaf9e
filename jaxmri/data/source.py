"""Where a run's images come from: the user's folder, or the generated phantom set by default.

With no ``--data`` a run still works out of the box: a synthetic phantom dataset (``jaxmri.data.phantom``,
our own generator, no download) is written into the run directory and read through exactly the same
validation, crop and duplicate pipeline as real data.
"""

from pathlib import Path

import numpy as np

from jaxmri.data.dataset import ImageSet, load_image_folder
from jaxmri.data.phantom import write_phantom_dataset
from jaxmri.data.split import grouped_stratified_split
from jaxmri.errors import DataError

PHANTOM_TUMOR, PHANTOM_HEALTHY = 60, 40


def load_dataset(data: str | None, run_dir: Path, *, seed: int = 0, **kwargs) -> ImageSet:
    """``load_image_folder(data, **kwargs)``, or a phantom set written to ``run_dir/phantom_data`` when ``data`` is None."""
    if data is None:
        root = write_phantom_dataset(Path(run_dir) / "phantom_data", PHANTOM_TUMOR, PHANTOM_HEALTHY, seed=seed)
        print(f"No --data given: using a generated phantom set ({PHANTOM_TUMOR} tumor, {PHANTOM_HEALTHY} healthy "
              f"synthetic images in {root}); pass --data DIR to train on real MRI.")
        data = root
    return load_image_folder(data, **kwargs)


def phantom_masks_dir(data: str | None, run_dir: Path) -> Path | None:
    """The phantom set's mask folder when the run uses the phantom, else None."""
    return Path(run_dir) / "phantom_data" / "masks" if data is None else None


def split_or_explain(labels, groups, cfg) -> dict[str, np.ndarray]:
    """``grouped_stratified_split`` with the run config's fractions and seed; a split that cannot be made
    becomes a one-line ``DataError`` naming the flags to change."""
    try:
        return grouped_stratified_split(labels, groups, test_fraction=cfg.test_fraction,
                                        val_fraction=cfg.val_fraction, seed=cfg.seed)
    except ValueError as err:
        raise DataError(f"cannot split the data: {err} (flags --test-fraction / --val-fraction)") from None
