"""The configs: the paper's defaults, one list of valid choices, and config.json round trips."""

import dataclasses
import json

import pytest

from jaxmri import config
from jaxmri.config import ClassifyConfig, SegmentConfig, load_config, save_config
from jaxmri.errors import JaxmriError, RunDirError


@pytest.mark.parametrize("cfg", [ClassifyConfig(), SegmentConfig(),
                                 ClassifyConfig(arch="vgg19", pretrained="none", lr=3e-4, data="d", out="o"),
                                 SegmentConfig(loss="bce+dice", width=8, image_size=128, negatives=5, threshold=0.3)])
def test_save_then_load_gives_the_same_config(cfg, tmp_path):
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == type(cfg).__name__


def test_paper_defaults():
    cfg = ClassifyConfig()
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.image_size, cfg.optimizer) == (50, 1e-3, 4e-4, 224, "adam")
    assert (SegmentConfig().lr, SegmentConfig().loss) == (1e-3, "bce")


@pytest.mark.parametrize("field, choices, cls", [("arch", config.ARCHS, ClassifyConfig),
                                                 ("pretrained", config.PRETRAINED, ClassifyConfig),
                                                 ("optimizer", config.OPTIMIZERS, SegmentConfig),
                                                 ("loss", config.LOSSES, SegmentConfig)])
def test_each_choice_list_is_what_the_config_accepts(field, choices, cls):
    for choice in choices:
        assert getattr(cls(**{field: choice}), field) == choice
    with pytest.raises(ValueError, match=f"--{field} must be"):
        cls(**{field: "nope"})


@pytest.mark.parametrize("text, message", [
    ("not json", "cannot be read as JSON"),
    ('["a list"]', "not a jaxmri run config"),
    ('{"kind": "ClassifyConfig", "epochs": 1, "colour": "red"}', "unknown ClassifyConfig fields ['colour']"),
    ('{"kind": "SegmentConfig", "width": 0}', "--width must be a positive number"),
])
def test_a_bad_config_file_is_one_run_dir_error(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(RunDirError, match="config.json") as err:
        load_config(path)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_every_user_error_shares_one_root_and_its_exit_status():
    from jaxmri import errors

    classes = [errors.DataError, errors.BadImageError, errors.MaskError, errors.RunDirError, errors.WeightsError]
    assert all(issubclass(cls, JaxmriError) and cls.exit_status == 2 for cls in classes)
    from jaxmri.weights.download import DownloadError

    assert issubclass(DownloadError, JaxmriError)
    assert dataclasses.is_dataclass(ClassifyConfig) and ClassifyConfig.__dataclass_params__.frozen
