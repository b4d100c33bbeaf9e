"""Shared fixtures: the real data folder (skipped when absent) and a small phantom dataset."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from jaxmri.data.phantom import write_phantom_dataset

# jit compilation makes first examples slow, so no per-example deadline; under CI the examples are
# derandomized so a run is repeatable.
settings.register_profile("jaxmri", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("jaxmri")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The commands the tests start (``python -m jaxmri...``) keep XLA's compiled programs in a cache
# (``jaxmri.compile_cache``): give the test session its own, empty at the start and removed at the end,
# never the user's ~/.cache.
if "JAXMRI_COMPILE_CACHE" not in os.environ:
    os.environ["JAXMRI_COMPILE_CACHE"] = _SESSION_CACHE = tempfile.mkdtemp(prefix="jaxmri-test-xla-")
    atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)


def data_root() -> Path:
    """``$JAXMRI_DATA`` if set, else ``<project root>/../shared/data`` (it may not exist)."""
    return Path(os.environ.get("JAXMRI_DATA") or PROJECT_ROOT.parent / "shared" / "data")


@pytest.fixture
def real_data_dir() -> Path:
    """The real data folder (holding ``brain_tumor_dataset/`` and ``annotations/``), or skip."""
    root = data_root()
    if not (root / "brain_tumor_dataset").is_dir():
        pytest.skip(f"real data not found at {root} (set JAXMRI_DATA to the folder holding brain_tumor_dataset/)")
    return root


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A small phantom dataset written once per session: yes/ (12), no/ (8) and masks/ (12)."""
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_tumor=12, n_healthy=8, seed=0)
