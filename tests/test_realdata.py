"""Integration on the paper's real data, read in place (``$JAXMRI_DATA`` or ``../shared/data``), small budgets."""

import json

import pytest

from jaxmri.train import main

pytestmark = pytest.mark.realdata


def groups_by_part(split: dict) -> dict[str, set[int]]:
    return {part: {row["group"] for row in rows} for part, rows in split.items()}


def test_classify_real_data_one_epoch(tmp_path, real_data_dir, capsys):
    out = tmp_path / "cnn"
    code = main(["classify", "--arch", "cnn", "--data", str(real_data_dir / "brain_tumor_dataset"), "--epochs", "1",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "253 images" in printed
    split = json.loads((out / "split.json").read_text())["parts"]
    assert sum(len(rows) for rows in split.values()) == 253
    parts = groups_by_part(split)
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"]) and not (parts["val"] & parts["test"])
    assert 0.22 < len(split["test"]) / 253 < 0.32
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and len(metrics["epochs"]) == 1


def test_segment_real_masks_one_epoch(tmp_path, real_data_dir):
    out = tmp_path / "unet"
    code = main(["segment", "--data", str(real_data_dir / "brain_tumor_dataset"),
                 "--masks", str(real_data_dir / "annotations" / "tumor_polygons_coco.json"),
                 "--epochs", "1", "--width", "4", "--image-size", "64", "--out", str(out)])
    assert code == 0
    split = json.loads((out / "split.json").read_text())["parts"]
    assert sum(len(rows) for rows in split.values()) == 50
    # The annotated byte-identical pairs (Y10/Y37, Y14/Y17, Y15/Y34, Y30/Y38) never straddle a split.
    part_of = {row["path"].split("/")[-1].split(".")[0].upper(): part for part, rows in split.items() for row in rows}
    for a, b in [("Y10", "Y37"), ("Y14", "Y17"), ("Y15", "Y34"), ("Y30", "Y38")]:
        assert part_of[a] == part_of[b]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["dice"] <= 1.0 and len(metrics["per_image"]) == len(split["test"])
