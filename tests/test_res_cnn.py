"""ResCNN, our from-scratch recipe: shapes, batch norm in train vs eval mode, a run, and loading it back."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmri.inference import load_run
from jaxmri.models import ResCNN, count_params
from jaxmri.train import main
from jaxmri.training.classify_steps import eval_step, train_step
from jaxmri.training.optim import make_optimizer


def test_shapes_and_size():
    model = ResCNN(2, rngs=nnx.Rngs(0))
    assert count_params(model) == 700_434
    assert model(jnp.zeros((2, 64, 64, 3))).shape == (2, 2)
    assert model.last_conv(jnp.zeros((1, 224, 224, 3))).shape == (1, 14, 14, 128)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(jnp.zeros((1, 40, 40, 3)))


def test_batch_norm_learns_statistics_in_training_and_uses_them_in_eval():
    model = ResCNN(2, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)),
             "label": jnp.array([0, 1, 0, 1], jnp.int32), "weight": jnp.ones(4)}
    before = np.asarray(model.stem_bn.mean[...]).copy()
    model.train()
    train_step(model, optimizer, batch, None)
    assert not np.allclose(np.asarray(model.stem_bn.mean[...]), before)  # running mean moved
    model.eval()
    a, b = eval_step(model, batch), eval_step(model, batch)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # eval: running statistics, no dropout
    single = eval_step(model, {"image": batch["image"][:1]})
    np.testing.assert_allclose(np.asarray(single), np.asarray(a[:1]), atol=1e-5)  # no batch dependence


def test_a_rescnn_run_loads_back_for_predict(tmp_path, phantom_dir):
    out = tmp_path / "run"
    assert main(["classify", "--arch", "rescnn", "--data", str(phantom_dir), "--epochs", "1", "--image-size", "32",
                 "--batch-size", "8", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == "rescnn" and metrics["paper_mean_test_accuracy"] is None
    run = load_run(out)
    assert isinstance(run.model, ResCNN)
    logits = run.model(jnp.zeros((1, 32, 32, 3)))
    assert logits.shape == (1, 2) and bool(jnp.all(jnp.isfinite(logits)))
    # The checkpoint carries the batch statistics, not just the parameters.
    assert not np.allclose(np.asarray(run.model.stem_bn.var[...]), 1.0)
    assert jax.tree.leaves(nnx.state(run.model, nnx.BatchStat))
