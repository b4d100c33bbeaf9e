"""VGG19Classifier: torchvision layout, frozen backbone through the optimizer, adaptive pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmri.models import count_params
from jaxmri.models.layers import adaptive_avg_pool
from jaxmri.models.vgg19 import VGG19Classifier
from jaxmri.training.classify_steps import train_step
from jaxmri.training.optim import make_optimizer

TINY = dict(widths=(4, 8, 8, 16, 16), hidden=32)


def params_by_path(model):
    """{"['convs'][0]['kernel']": array, ...} for every parameter (copies, so later steps cannot alias them)."""
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    return {jax.tree_util.keystr(p).removesuffix(".value"): np.array(v) for p, v in leaves}


def test_full_size_layout_matches_torchvision():
    shapes = nnx.eval_shape(lambda: VGG19Classifier(2, rngs=nnx.Rngs(0)))
    state = nnx.state(shapes, nnx.Param)
    convs = [state["convs"][i]["kernel"].shape for i in range(16)]
    assert len(convs) == 16
    assert convs[0] == (3, 3, 3, 64) and convs[-1] == (3, 3, 512, 512)
    assert state["fc1"]["kernel"].shape == (25088, 4096)
    assert state["fc2"]["kernel"].shape == (4096, 4096)
    assert state["head"]["kernel"].shape == (4096, 2)
    total = count_params(shapes)
    # torchvision vgg19 has 143,667,240 parameters with a 1000-way head; ours has a 2-way head.
    assert total == 143_667_240 - (4096 * 1000 + 1000) + (4096 * 2 + 2)


def test_frozen_parameters_are_bit_identical_and_hold_no_optimizer_state():
    model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=4e-4)
    before = params_by_path(model)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             "label": np.array([0, 1, 0, 1], np.int32), "weight": np.ones(4, np.float32)}
    model.train()
    for step in range(4):
        train_step(model, optimizer, batch, jax.random.key(step))
    after = params_by_path(model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed == {"['head']['bias']", "['head']['kernel']"}
    opt_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(optimizer.opt_state))}
    assert opt_paths and all("head" in p for p in opt_paths if "mu" in p or "nu" in p)
    assert not any("convs" in p or "fc1" in p or "fc2" in p for p in opt_paths)


def test_unfrozen_backbone_trains_everything():
    model = VGG19Classifier(2, **TINY, freeze_backbone=False, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.0)
    before = params_by_path(model)
    batch = {"image": np.full((2, 32, 32, 3), 200, np.uint8), "label": np.array([0, 1], np.int32),
             "weight": np.ones(2, np.float32)}
    train_step(model, optimizer, batch)
    after = params_by_path(model)
    assert all(not np.array_equal(before[k], after[k]) for k in before if k.endswith("['kernel']"))


def test_dropout_only_in_train_mode():
    model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 32, 32, 3))
    model.eval()
    assert np.array_equal(model(x), model(x))
    model.train()
    assert not np.array_equal(model.embed(x), model.embed(x))


def test_adaptive_avg_pool_matches_pytorch_bins():
    x = jnp.arange(2 * 5 * 3 * 1, dtype=jnp.float32).reshape(2, 5, 3, 1)
    out = adaptive_avg_pool(x, 7, 7)
    # PyTorch bins for 5 -> 7 rows: [0,1),[0,2),[1,3),[2,3),[2,4),[3,5),[4,5); 3 -> 7 cols likewise.
    rows = [(0, 1), (0, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5)]
    cols = [(0, 1), (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 3)]
    ref = np.array([[[np.asarray(x)[n, r0:r1, c0:c1, 0].mean() for c0, c1 in cols] for r0, r1 in rows] for n in range(2)])
    np.testing.assert_allclose(np.asarray(out)[..., 0], ref, rtol=1e-6)
    assert adaptive_avg_pool(jnp.ones((1, 7, 7, 2)), 7, 7).shape == (1, 7, 7, 2)


@pytest.mark.parametrize("bad", [(2, 16, 16, 3), (2, 64, 64, 1)])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="VGG19Classifier expects"):
        VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))(jnp.zeros(bad))
