"""SmallCNN against the paper's Table 2: parameter count, every layer's output size, a whole train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmri.models import count_params
from jaxmri.models.layers import max_pool_2x2
from jaxmri.models.small_cnn import SmallCNN
from jaxmri.training.classify_steps import train_step
from jaxmri.training.optim import make_optimizer


@pytest.fixture(scope="module")
def model():
    return SmallCNN(2, rngs=nnx.Rngs(0))


def test_parameter_count_matches_table_2(model):
    conv1 = 3 * 3 * 3 * 16 + 16
    conv2 = 3 * 3 * 16 * 32 + 32
    fc1 = 32 * 56 * 56 * 128 + 128
    fc2 = 128 * 2 + 2
    assert count_params(model) == conv1 + conv2 + fc1 + fc2 == 12_850_530


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(min_value=1, max_value=9))
def test_every_layer_output_size_matches_table_2(model, batch):
    # Walk Table 2 row by row through the model's own layers (shapes only: no compute).
    def table_rows(x):
        rows = []
        x = nnx.relu(model.conv1(x)); rows.append(x)          # 1 Conv2d(3, 16)   224 x 224
        x = max_pool_2x2(x); rows.append(x)                   # 2 MaxPool2d       112 x 112
        x = nnx.relu(model.conv2(x)); rows.append(x)          # 3 Conv2d(16, 32)  112 x 112
        x = max_pool_2x2(x); rows.append(x)                   # 4 MaxPool2d       56 x 56
        x = nnx.relu(model.fc1(x.reshape(x.shape[0], -1))); rows.append(x)  # 5 Linear -> 128
        x = model.fc2(x); rows.append(x)                      # 6 Linear -> 2
        return rows

    rows = jax.eval_shape(table_rows, jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32))
    assert [r.shape for r in rows] == [
        (batch, 224, 224, 16),
        (batch, 112, 112, 16),
        (batch, 112, 112, 32),
        (batch, 56, 56, 32),
        (batch, 128),
        (batch, 2),
    ]
    out = jax.eval_shape(lambda x: model(x), jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32))
    assert out.shape == (batch, 2) and out.dtype == jnp.float32


@pytest.mark.parametrize("bad", [(2, 224, 224, 1), (2, 112, 112, 3), (224, 224, 3)])
def test_wrong_input_shape_is_a_clear_error(model, bad):
    with pytest.raises(ValueError, match="SmallCNN expects NHWC"):
        model(jnp.zeros(bad))


@pytest.mark.parametrize("kwargs", [{"image_size": 30}, {"num_classes": 1}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError, match="SmallCNN"):
        SmallCNN(**{"num_classes": 2, **kwargs}, rngs=nnx.Rngs(0))


def test_whole_train_step_learns_a_fixed_batch():
    # A small image size keeps this fast; the step is the library's own jitted train_step.
    model = SmallCNN(2, image_size=32, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 4, np.int32)
    images = (rng.random((8, 32, 32, 3)) * 60 + labels[:, None, None, None] * 150).astype(np.uint8)
    batch = {"image": images, "label": labels, "weight": np.ones(8, np.float32)}
    first = train_step(model, optimizer, batch)
    for _ in range(15):
        last = train_step(model, optimizer, batch)
    assert float(last["loss_sum"]) < float(first["loss_sum"])
    assert float(last["correct"]) == 8.0
