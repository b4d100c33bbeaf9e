"""Grad-CAM (jaxmri.models.gradcam) and the localisation score (jaxmri.evaluation.localisation)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmri.evaluation.localisation import centred_baseline, localisation_scores, mass_inside, pointing_hit
from jaxmri.models import SmallCNN, VGG19Classifier
from jaxmri.models.gradcam import cam_from, class_score_gradient, gradcam, maps_gradient
from jaxmri.predict import main as predict
from jaxmri.train import main as train


@pytest.mark.parametrize("model, size, maps", [
    (SmallCNN(2, image_size=32, rngs=nnx.Rngs(0)), 32, (16, 16)),
    (VGG19Classifier(2, widths=(4, 8, 8, 16, 16), hidden=16, rngs=nnx.Rngs(0)), 64, (4, 4)),
])
def test_gradcam_shapes_and_range(model, size, maps):
    model.eval()
    images = jax.random.randint(jax.random.key(0), (3, size, size, 3), 0, 256).astype(jnp.uint8)
    cam, probs = gradcam(model, {"image": images}, target=1)
    assert cam.shape == (3, *maps) and probs.shape == (3, 2)
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0 + 1e-6
    np.testing.assert_allclose(probs, jax.nn.softmax(model(images.astype(jnp.float32) / 255.0)), rtol=1e-5, atol=1e-6)


def test_the_split_forward_pass_is_the_model():
    for model, size in ((SmallCNN(2, image_size=16, rngs=nnx.Rngs(1)), 16),
                        (VGG19Classifier(2, widths=(4, 4, 4, 4, 4), hidden=8, rngs=nnx.Rngs(1)), 32)):
        model.eval()
        x = jax.random.uniform(jax.random.key(1), (2, size, size, 3))
        np.testing.assert_allclose(model.from_last_conv(model.last_conv(x)), model(x), rtol=1e-6, atol=1e-6)


def test_gradcam_gradient_matches_finite_differences_on_a_tiny_model():
    """At random positive maps (no max-pool ties, where the gradient is not defined), the library's
    jax.grad equals central finite differences, and the map equals the formula on those."""
    model = SmallCNN(2, image_size=8, rngs=nnx.Rngs(2))
    maps = jax.random.uniform(jax.random.key(3), (1, 4, 4, 32), minval=0.1, maxval=1.0)
    grads, _ = maps_gradient(model, maps, target=1)
    maps64 = np.asarray(maps, np.float64)

    def score(a):
        return float(model.from_last_conv(jnp.asarray(a, jnp.float32))[0, 1])

    eps = 1e-3
    fd = np.zeros_like(maps64)
    for index in np.ndindex(maps64.shape):  # 1 x 4 x 4 x 32 = 512 entries
        up, down = maps64.copy(), maps64.copy()
        up[index] += eps
        down[index] -= eps
        fd[index] = (score(up) - score(down)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grads), fd, rtol=2e-2, atol=2e-3)
    alpha = fd.mean(axis=(1, 2), keepdims=True)
    expected = np.maximum((alpha * maps64).sum(-1), 0)
    expected = expected / expected.max() if expected.max() > 0 else expected
    np.testing.assert_allclose(np.asarray(cam_from(maps, grads)), expected, rtol=2e-2, atol=2e-2)
    # class_score_gradient is maps_gradient at the model's own last-conv maps.
    x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 3))
    own_maps, own_grads, logits = class_score_gradient(model, x, target=0)
    np.testing.assert_allclose(own_maps, model.last_conv(x))
    np.testing.assert_allclose(own_grads, maps_gradient(model, own_maps, 0)[0])
    np.testing.assert_allclose(logits, model(x), rtol=1e-6, atol=1e-6)


def test_localisation_scores_on_hand_made_maps():
    mask = np.zeros((40, 60), bool)
    mask[5:15, 40:55] = True  # a tumor away from the centre
    box = (0, 0, 60, 40)
    on_tumor = np.zeros((40, 60), np.float32)
    on_tumor[10, 45] = 1.0
    base = centred_baseline((40, 60), box)
    assert pointing_hit(on_tumor, mask) and mass_inside(on_tumor, mask) == 1.0
    assert not pointing_hit(base, mask) and 0 < mass_inside(base, mask) < 0.2
    assert base[19, 29] == base.max()  # the centre of the 60 x 40 box (29.5, 19.5) is its peak
    scores = localisation_scores([on_tumor], [mask], [box])
    assert scores["gradcam"] == {"pointing_game": 1.0, "mass_inside": 1.0}
    assert scores["centred_baseline"]["pointing_game"] == 0.0 and scores["images"] == 1


def test_gradcam_points_at_the_phantom_tumor_after_phantom_training(tmp_path, phantom_dir, capsys):
    """The phantom's tumor position is known: after 3 epochs on phantoms, Grad-CAM's peak is mostly on it."""
    run = tmp_path / "cnn"
    assert train(["classify", "--data", str(phantom_dir), "--epochs", "3", "--image-size", "32", "--batch-size", "8",
                  "--out", str(run)]) == 0
    out = tmp_path / "p"
    assert predict(["--run", str(run), "--out", str(out), "--localisation", str(phantom_dir / "masks"),
                    "--no-progress", str(phantom_dir / "yes")]) == 0
    scores = json.loads((out / "localisation.json").read_text())
    printed = capsys.readouterr().out
    print(printed.splitlines()[-1])  # the figure, for the record (pytest -s)
    assert scores["images"] == 12 and "pointing game" in printed
    assert scores["gradcam"]["pointing_game"] >= 0.5
    assert scores["gradcam"]["pointing_game"] > scores["centred_baseline"]["pointing_game"]
    assert scores["gradcam"]["mass_inside"] > scores["centred_baseline"]["mass_inside"]
