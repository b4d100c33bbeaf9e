"""Set-up shared by every lesson: quick mode, where figures go, and which data to use.

Not a lesson itself. Each lesson does ``from lesson_setup import ...`` (the lesson's own folder is on
``sys.path`` when it runs as a script or in Jupyter started from ``lessons/``).

- ``JAXMRI_LESSON_QUICK=1``: tiny sizes and epochs, so a lesson runs in well under a minute.
- ``JAXMRI_LESSON_FIGURES``: folder for the PNGs (default ``lessons/figures``, git-ignored).
- ``JAXMRI_DATA``: the folder holding ``brain_tumor_dataset/`` and ``annotations/`` (default
  ``../shared/data`` beside the repository); without it the lessons generate phantoms.

Importing it also sets the course's one figure style (``STYLE``: sizes, fonts, grid, colours; tumor is
always ``TUMOR`` red and healthy ``HEALTHY`` blue), so every lesson's figures look alike.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (Pillow comes with matplotlib)

import jaxmri  # noqa: E402
from jaxmri.data.phantom import write_phantom_dataset  # noqa: E402

TUMOR, HEALTHY = "#d62728", "#1f77b4"  # the colours of the two classes, in every figure
STYLE = {
    "figure.figsize": (8, 3.6), "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "image.cmap": "gray", "savefig.bbox": "tight",
    "axes.prop_cycle": matplotlib.cycler(color=[HEALTHY, TUMOR, "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f"]),
}
plt.rcParams.update(STYLE)

QUICK = os.environ.get("JAXMRI_LESSON_QUICK") == "1"
ROOT = Path(jaxmri.__file__).resolve().parents[1]  # the repository (jaxmri is installed editable)
FIGURES = Path(os.environ.get("JAXMRI_LESSON_FIGURES") or ROOT / "lessons" / "figures")
FIGURES.mkdir(parents=True, exist_ok=True)
REAL = Path(os.environ.get("JAXMRI_DATA") or ROOT.parent / "shared" / "data")


def lesson_data(name: str):
    """``(DATA, SOURCE, WORK)``: the class-folder dataset, a label for it, and a temporary work folder
    (deleted when the lesson ends) where phantoms are written when the real data is absent."""
    work = tempfile.TemporaryDirectory(prefix=f"jaxmri-{name}-")
    if (REAL / "brain_tumor_dataset").is_dir():
        data, source = REAL / "brain_tumor_dataset", "real Kaggle data"
    else:
        data, source = write_phantom_dataset(Path(work.name) / "phantom", 60, 40, seed=0), "phantom data"
    print(f"Data: {source.upper()} in {data}; quick mode: {QUICK}; figures -> {FIGURES}")
    return data, source, work


def add_phantom_copies(data: Path) -> None:
    """Give a phantom set the kinds of copies the real set has (lesson 1 and its solutions): in each class
    folder, 7 byte-identical copies and 5 re-saved, 0.8x smaller JPEGs of randomly chosen scans (seed 0)."""
    pick = np.random.default_rng(0)
    for folder in ("yes", "no"):
        files = sorted((data / folder).glob("*.png"))
        for i, src in enumerate(pick.choice(files, 12, replace=False)):
            if i < 7:
                shutil.copy(src, src.with_name(f"{src.stem} copy.png"))
            else:
                small = cv2.resize(cv2.imread(str(src)), None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(src.with_name(f"{src.stem}_resaved.jpg")), small, [cv2.IMWRITE_JPEG_QUALITY, 85])


def save(fig, name: str, dpi: int = 80) -> Path:
    """Save a figure into FIGURES as a 256-colour PNG (small files), and show it inside Jupyter."""
    path = FIGURES / name
    fig.set_dpi(dpi)
    fig.canvas.draw()
    Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).quantize(256).save(path, optimize=True)
    plt.close(fig)
    print(f"figure: {path} ({path.stat().st_size / 1024:.0f} KB)")
    if "ipykernel" in sys.modules:
        from IPython.display import Image as Shown, display

        display(Shown(filename=str(path)))
    return path
