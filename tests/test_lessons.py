"""The lessons in lessons/ run end to end (quick mode, phantom data) and write exactly their figures.

Each lesson runs in its own subprocess, the way a student runs it (``python lessons/0N_....py``), from a
foreign working directory, with ``JAXMRI_DATA`` pointing at a folder that does not exist (so the phantom
data are used even where the real set is installed) and ``JAXMRI_LESSON_FIGURES`` inside ``tmp_path``.
A static check keeps the lessons honest: they import models, losses and steps from
``jaxmri`` and never define or jit their own.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LESSONS_DIR = PROJECT_ROOT / "lessons"

# lesson file -> the figures it must write (and nothing else)
LESSONS = {
    "01_data_pipeline.py": {"01_brain_crop.png", "01_duplicate_groups.png", "01_split_leakage.png"},
    "02_small_cnn_train_step.py": {"02_augmentation.png", "02_learning_curves.png", "02_confusion_matrix.png",
                                   "02_adam_vs_adamw.png"},
    "03_freezing_vgg19.py": {"03_freezing.png"},
    "04_unet_segmentation.py": {"04_mask_crop.png", "04_training.png", "04_overlays.png"},
}
MAX_FIGURE_BYTES = 150_000
# Calls that would mean a lesson carries its own training step instead of importing jaxmri's.
FORBIDDEN_CALLS = {"jit", "grad", "value_and_grad", "vmap", "pmap"}


def run_lesson(lesson: str, tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAXMRI_LESSON_QUICK": "1", "JAXMRI_DATA": str(data_dir),
           "JAXMRI_LESSON_FIGURES": str(tmp_path / "figures"), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(LESSONS_DIR / lesson)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_lesson_runs_on_phantoms_and_writes_its_figures(lesson, tmp_path):
    result = run_lesson(lesson, tmp_path, tmp_path / "no-data-here")
    output = f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert result.returncode == 0, f"{lesson} exited with {result.returncode}:\n{output}"
    assert "Data: PHANTOM DATA" in result.stdout, f"{lesson} did not say which data it used:\n{result.stdout[:500]}"
    figures = tmp_path / "figures"
    written = {p.name for p in figures.iterdir()} if figures.is_dir() else set()
    assert written == LESSONS[lesson], f"{lesson} wrote {sorted(written)}, expected {sorted(LESSONS[lesson])}"
    for name in written:
        size = (figures / name).stat().st_size
        assert 1_000 < size < MAX_FIGURE_BYTES, f"{name} is {size} bytes; figures must be under {MAX_FIGURE_BYTES}"


@pytest.mark.realdata
def test_first_lesson_uses_the_real_data_when_present(real_data_dir, tmp_path):
    result = run_lesson("01_data_pipeline.py", tmp_path, real_data_dir)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Data: REAL KAGGLE DATA" in result.stdout
    assert "253 images" in result.stdout


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_lesson_is_prose_plus_library_calls(lesson):
    source = (LESSONS_DIR / lesson).read_text()
    assert source.count("# %% [markdown]") >= 5, f"{lesson}: expected Jupytext percent cells with prose"
    assert "## Exercises" in source.rsplit("# %% [markdown]", 1)[-1], f"{lesson}: must end with an Exercises cell"
    tree = ast.parse(source)
    classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert not classes, f"{lesson} defines classes {classes}; models belong in jaxmri/"
    names = {node.attr if isinstance(node, ast.Attribute) else node.id
             for node in ast.walk(tree) if isinstance(node, (ast.Attribute, ast.Name))}
    assert not names & FORBIDDEN_CALLS, f"{lesson} uses {sorted(names & FORBIDDEN_CALLS)}; steps belong in jaxmri/"
    imported = {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert "jaxmri" in imported, f"{lesson} imports nothing from jaxmri"
