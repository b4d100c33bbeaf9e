"""Every jitted step of the library, lowered for GPU and TPU without a device.

CI has no GPU, so it cannot run the steps there; lowering is what it can check. ``lowering_platforms``
makes JAX produce the StableHLO program it would hand to the CUDA or TPU compiler: each
``lax.platform_dependent`` takes its non-CPU branch, and anything that only exists on CPU (a host
callback, a CPU library call) would show up as a custom call. The CPU-only arithmetic (SmallCNN's
first-layer kernel gradient as matrix products, VGG19's Winograd convolutions) must be absent from those
programs, which must instead hold exactly what the plain layers compile to. The compile options that
the CPU steps pass are not part of a lowered program; ``test_unet.py`` checks they are dropped off CPU.
"""

import collections
import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from jaxmri.models import SmallCNN, UNet, VGG19Classifier
from jaxmri.models.gradcam import gradcam
from jaxmri.models.winograd import WINOGRAD_MIN_CHANNELS
from jaxmri.training import classify_steps, segment_steps
from jaxmri.training.optim import make_optimizer

OTHERS = ("cuda", "tpu")


def _ops(traced, platform: str) -> collections.Counter:
    """How many convolutions, dot_generals and custom calls (by target) the lowered program holds."""
    text = traced.lower(lowering_platforms=(platform,)).as_text()
    ops = collections.Counter(convolution=text.count("stablehlo.convolution"), dot_general=text.count("stablehlo.dot_general"))
    ops.update(f"custom_call {target}" for target in re.findall(r"custom_call @([\w.]+)", text))
    return ops


def _classifier_batch(size: int, n: int = 2) -> dict:
    return {"image": jnp.zeros((n, size, size, 3), jnp.uint8), "label": jnp.zeros(n, jnp.int32), "weight": jnp.ones(n)}


def _classifier_traces(model, size: int) -> dict:
    """The train step (with augmentation, as training calls it), the eval step and Grad-CAM, traced."""
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4)
    batch = _classifier_batch(size)
    traces = {"train": classify_steps.plain_train_step.trace(model, optimizer, batch, jax.random.key(0))}
    model.eval()
    traces["eval"] = classify_steps.eval_step.trace(model, batch)
    traces["gradcam"] = gradcam.trace(model, batch, target=1)
    return traces


def _no_custom_calls(ops: collections.Counter, what: str) -> None:
    calls = sorted(op for op in ops if op.startswith("custom_call"))
    assert not calls, f"{what} calls {calls}: a library call that another backend may not have"


@pytest.mark.parametrize("platform", OTHERS)
def test_small_cnn_steps_lower_for_other_backends_with_xla_convolution_gradient(platform):
    """On CPU the first layer's kernel gradient is one matrix product per image; elsewhere it is XLA's
    weight-gradient convolution: one convolution more, the products gone. Forward-only steps are the same."""
    traces = _classifier_traces(SmallCNN(2, image_size=16, rngs=nnx.Rngs(0)), 16)
    for name, traced in traces.items():
        cpu, other = _ops(traced, "cpu"), _ops(traced, platform)
        _no_custom_calls(cpu, f"SmallCNN {name} on cpu")
        _no_custom_calls(other, f"SmallCNN {name} on {platform}")
        if name == "train":
            assert other["convolution"] == cpu["convolution"] + 1, (cpu, other)
            assert other["dot_general"] < cpu["dot_general"], (cpu, other)  # the products and their fold
        else:
            assert other == cpu, (name, cpu, other)


@pytest.mark.parametrize("platform", OTHERS)
def test_vgg19_steps_lower_for_other_backends_without_winograd(platform):
    """A VGG19 whose last blocks take the Winograd path on CPU: lowered for GPU or TPU, each step is
    op for op the program of the same model with Winograd switched off (only XLA's convolutions)."""
    widths = (8, 16, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS)
    model = VGG19Classifier(2, widths=widths, hidden=16, rngs=nnx.Rngs(0))
    winograd = {name: (_ops(traced, "cpu"), _ops(traced, platform)) for name, traced in _classifier_traces(model, 32).items()}
    model.winograd = False
    model.train()
    direct = {name: _ops(traced, "cpu") for name, traced in _classifier_traces(model, 32).items()}
    for name, (cpu, other) in winograd.items():
        _no_custom_calls(other, f"VGG19 {name} on {platform}")
        assert other == direct[name], (name, other, direct[name])
        assert cpu["dot_general"] > other["dot_general"] and cpu["convolution"] < other["convolution"], (name, cpu, other)


@pytest.mark.parametrize("platform", OTHERS)
def test_unet_steps_lower_for_other_backends_unchanged(platform):
    """The U-Net has no CPU-only arithmetic (its CPU choice is a compile option): the same program."""
    model = UNet(1, 1, width=8, depth=2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=model.trainable_filter())
    batch = {"image": jnp.zeros((2, 32, 32, 1)), "mask": jnp.zeros((2, 32, 32, 1)), "weight": jnp.ones(2)}
    traces = {"train": segment_steps.plain_train_step.trace(model, optimizer, batch, jax.random.key(0), loss="bce"),
              "predict": segment_steps.predict_step.trace(model, batch)}
    for name, traced in traces.items():
        cpu, other = _ops(traced, "cpu"), _ops(traced, platform)
        _no_custom_calls(other, f"U-Net {name} on {platform}")
        assert other == cpu and other["convolution"] > 0, (name, cpu, other)
