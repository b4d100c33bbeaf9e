"""Checkers for lesson 6 (Grad-CAM): each recomputes the answer with the library, or from its definition."""

import jax
import numpy as np
from flax import nnx

from checks import expect, expect_close, ok
from jaxmri.data.crop import brain_box
from jaxmri.data.phantom import make_phantom
from jaxmri.models import SmallCNN
from jaxmri.models.gradcam import gradcam


def check_gradcam(grad_cam) -> None:
    """``grad_cam(model, images, target)`` must equal ``jaxmri.models.gradcam.gradcam`` (exercise 1)."""
    model = SmallCNN(2, image_size=32, rngs=nnx.Rngs(3))
    model.eval()
    pixels = np.asarray(jax.random.randint(jax.random.key(4), (4, 32, 32, 3), 0, 256), np.uint8)
    images = pixels.astype(np.float32) / 255.0
    for target in (1, 0):
        want = np.asarray(gradcam(model, {"image": pixels}, target=target)[0])
        got = np.asarray(grad_cam(model, images, target))
        expect(got.shape == want.shape, 1, f"target {target}: maps of shape {got.shape}, expected {want.shape} "
                                           "(N, S/2, S/2): one map per image at the last conv's size")
        expect(float(np.min(got)) >= 0 and float(np.max(got)) <= 1 + 1e-6, 1,
               "maps must lie in [0, 1]: ReLU, then divide each map by its own maximum")
        worst = float(np.max(np.abs(got - want)))
        expect(worst < 1e-4, 1, f"Grad-CAM of class {target} differs from the library's by up to {worst:.3g}: "
                                "average the gradient over the map's height and width, weight the maps, sum over "
                                "channels, ReLU, divide by the peak")
    ok(1, "your Grad-CAM equals jaxmri.models.gradcam.gradcam for both classes")


def check_chance_level(value: float, truths, boxes) -> None:
    """The pointing game of a random peak in the brain box, averaged over images (exercise 2)."""
    expect(len(truths) == len(boxes) and len(truths) > 0, 2, "pass the masks and the boxes of the same images")
    shares = []
    for mask, (x0, y0, x1, y1) in zip(truths, boxes):
        inside = np.asarray(mask)[int(y0):int(y1), int(x0):int(x1)] > 0
        shares.append(inside.mean())
    want = float(np.mean(shares))
    whole = float(np.mean([np.mean(np.asarray(m) > 0) for m in truths]))
    expect(not np.isclose(value, whole, rtol=1e-4) or np.isclose(whole, want, rtol=1e-4), 2,
           "that is the tumor's share of the whole scan; count only the pixels inside the brain box")
    expect_close(value, want, 2, "chance level of the pointing game", rtol=1e-4)
    ok(2, f"chance level {want:.3f} over {len(truths)} images (tumor share of the brain box)")


def check_brightness_heat(brightness_heat) -> None:
    """``brightness_heat(rgb, box)``: gray value in the box / its maximum there, 0 outside (exercise 3)."""
    (phantom,), _, _ = make_phantom(1, 0, seed=5)
    colour = np.asarray(jax.random.randint(jax.random.key(6), (40, 50, 3), 0, 200), np.uint8)
    for rgb, box in ((phantom, brain_box(phantom)), (colour, (7, 3, 41, 29))):
        x0, y0, x1, y1 = box
        heat = np.asarray(brightness_heat(rgb, box))
        expect(heat.shape == rgb.shape[:2], 3, f"the map must have the scan's size {rgb.shape[:2]}, got {heat.shape}")
        outside = np.ones(heat.shape, bool)
        outside[y0:y1, x0:x1] = False
        expect(not np.any(heat[outside]), 3, "the map must be 0 outside the brain box (ends exclusive: [y0:y1, x0:x1])")
        gray = rgb[y0:y1, x0:x1].astype(np.float64).mean(-1)
        worst = float(np.max(np.abs(heat[y0:y1, x0:x1] - gray / gray.max())))
        expect(worst < 1e-5, 3, f"inside the box the map differs from gray / max by up to {worst:.3g} "
                                "(gray = the mean of R, G and B)")
    ok(3, "brightness map: gray / max inside the box, 0 outside, at the scan's size")
