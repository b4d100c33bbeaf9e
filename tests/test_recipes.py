"""Our training recipes beyond the paper: label smoothing, a cosine schedule, test-time flip averaging."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmri.config import ClassifyConfig, SegmentConfig
from jaxmri.models import SmallCNN
from jaxmri.predict import main as predict
from jaxmri.train import build_parser, config_from_args
from jaxmri.train import main as train
from jaxmri.training.classify import Evaluator
from jaxmri.training.losses import cross_entropy
from jaxmri.training.optim import make_tx


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    logits = jax.random.normal(jax.random.key(0), (6, 2)) * 3
    labels = jnp.array([0, 1, 1, 0, 1, 0])
    weight = jnp.array([1, 1, 1, 1, 1, 0.0])
    log_p = jax.nn.log_softmax(logits)
    targets = jax.nn.one_hot(labels, 2) * 0.9 + 0.1 / 2
    expected = -(targets * log_p).sum(-1)[:5].mean()
    np.testing.assert_allclose(cross_entropy(logits, labels, weight, 0.1), expected, rtol=1e-6)
    plain = -log_p[jnp.arange(6), labels][:5].mean()
    np.testing.assert_allclose(cross_entropy(logits, labels, weight), plain, rtol=1e-6)
    assert cross_entropy(logits, labels, weight, 0.1) != cross_entropy(logits, labels, weight)
    with pytest.raises(ValueError, match="--label-smoothing"):
        ClassifyConfig(label_smoothing=1.0)


def test_cosine_schedule_starts_at_lr_and_ends_at_zero():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 0.5)}

    def updates(tx, steps):
        state, out = tx.init(params), []
        for _ in range(steps):
            u, state = tx.update(grads, state, params)
            out.append(float(u["w"][0]))
        return out

    cosine = updates(make_tx(lr=1e-2, weight_decay=0.0, schedule="cosine", steps=10), 11)
    constant = updates(make_tx(lr=1e-2, weight_decay=0.0), 11)
    assert cosine[0] == pytest.approx(constant[0])  # the first step at the full learning rate
    assert abs(cosine[5]) == pytest.approx(abs(constant[5]) * 0.5, rel=1e-5)  # half-way: half of it
    assert cosine[10] == 0.0 and constant[10] != 0.0
    with pytest.raises(ValueError, match="steps"):
        make_tx(lr=1e-2, weight_decay=0.0, schedule="cosine")
    with pytest.raises(ValueError, match="--schedule"):
        SegmentConfig(schedule="linear")


def test_flags_reach_the_config():
    cfg = config_from_args(build_parser().parse_args(
        ["classify", "--arch", "rescnn", "--schedule", "cosine", "--label-smoothing", "0.1", "--tta"]))
    assert (cfg.schedule, cfg.label_smoothing, cfg.tta) == ("cosine", 0.1, True)
    assert config_from_args(build_parser().parse_args(["segment", "--schedule", "cosine"])).schedule == "cosine"


def test_tta_averages_the_logits_of_image_and_mirror_image():
    model = SmallCNN(2, image_size=32, rngs=nnx.Rngs(0))
    images = np.asarray(jax.random.randint(jax.random.key(1), (5, 32, 32, 3), 0, 256), np.uint8)
    labels = np.zeros(5, np.int32)
    plain = Evaluator(model, images, labels, 4).logits(model)
    mirrored = Evaluator(model, images[:, :, ::-1].copy(), labels, 4).logits(model)
    np.testing.assert_allclose(Evaluator(model, images, labels, 4, tta=True).logits(model), (plain + mirrored) / 2,
                               rtol=1e-6)
    assert not np.allclose(plain, mirrored)


def test_a_run_with_every_recipe_trains_and_predict_uses_its_tta(phantom_dir, tmp_path):
    out = tmp_path / "run"
    assert train(["classify", "--arch", "rescnn", "--data", str(phantom_dir), "--epochs", "2", "--image-size", "32",
                  "--batch-size", "8", "--schedule", "cosine", "--label-smoothing", "0.1", "--tta",
                  "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(np.isfinite(e["train_loss"]) for e in metrics["epochs"])
    expected = metrics["test_predictions"]
    files = [str(phantom_dir / row["path"]) for row in expected]
    assert predict(["--run", str(out), "--out", str(tmp_path / "p"), "--no-progress", *files]) == 0
    got = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got],
                               [row["probabilities"] for row in expected], rtol=1e-5, atol=1e-6)
