"""Adam with PyTorch-style weight decay (Table 3) and the evaluation metrics."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmri.evaluation.metrics import classification_report, confusion_matrix, mean_scores, segmentation_scores
from jaxmri.training.optim import make_tx


def torch_adam_reference(param, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam's update rule written out (weight decay added to the gradient)."""
    m = np.zeros_like(param); v = np.zeros_like(param); p = param.copy()
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


def run_tx(tx, param, grads):
    p = jnp.asarray(param); state = tx.init(p)
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, updates)
    return np.asarray(p)


def test_adam_weight_decay_is_pytorch_l2_not_adamw():
    rng = np.random.default_rng(0)
    param = rng.normal(size=5).astype(np.float32)
    grads = [rng.normal(size=5).astype(np.float32) for _ in range(4)]
    ref = torch_adam_reference(param, grads, lr=1e-1, wd=0.5)
    np.testing.assert_allclose(run_tx(make_tx(lr=1e-1, weight_decay=0.5), param, grads), ref, rtol=1e-5, atol=1e-6)
    decoupled = run_tx(make_tx(lr=1e-1, weight_decay=0.5, kind="adamw"), param, grads)
    assert not np.allclose(decoupled, ref, atol=1e-4)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_tx(lr=1e-3, weight_decay=0.0, kind="sgd")


def test_confusion_matrix_layout_and_rates():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    preds = np.array([0, 1, 0, 1, 1, 0, 1])
    assert confusion_matrix(labels, preds).tolist() == [[2, 1], [1, 3]]  # [[tn, fp], [fn, tp]]
    report = classification_report(labels, preds)
    assert report["accuracy"] == pytest.approx(5 / 7)
    assert report["sensitivity"] == pytest.approx(3 / 4)
    assert report["specificity"] == pytest.approx(2 / 3)


def test_segmentation_scores_by_hand():
    truth = np.zeros((3, 4, 4), np.uint8); pred = np.zeros((3, 4, 4), np.uint8)
    truth[0, :2, :2] = 1; pred[0, :2, :3] = 1            # tp 4, fp 2, fn 0
    pred[1, 0, 0] = 1                                   # empty truth, one false positive
    s = segmentation_scores(truth, pred)                # image 2: both empty
    np.testing.assert_allclose(s["dice"], [8 / 10, 0.0, 1.0])
    np.testing.assert_allclose(s["iou"], [4 / 6, 0.0, 1.0])
    np.testing.assert_allclose(s["pixel_accuracy"], [14 / 16, 15 / 16, 1.0])
    assert s["sensitivity"][0] == 1.0 and np.isnan(s["sensitivity"][1:]).all()
    means = mean_scores(s)
    assert means["sensitivity"] == 1.0 and means["dice"] == pytest.approx((0.8 + 0 + 1) / 3)


@pytest.mark.parametrize("arch", ["cnn", "vgg19", "unet"])
def test_a_second_fold_reuses_the_compiled_train_step(arch):
    """A new model and optimizer with the same settings (the next fold) runs the executable already
    compiled: the optimizer's transformation is static in the step's signature, so ``make_tx`` must
    hand back the same object for the same settings."""
    from flax import nnx

    from jaxmri.models import UNet, VGG19Classifier
    from jaxmri.models.small_cnn import SmallCNN
    from jaxmri.training import classify_steps, segment_steps
    from jaxmri.training.optim import make_optimizer

    step = segment_steps.train_step if arch == "unet" else classify_steps.train_step
    compiled = []
    size, channels = 32, 1 if arch == "unet" else 3
    batch = {"image": jnp.zeros((2, size, size, channels), jnp.uint8), "weight": jnp.ones(2, jnp.float32)}
    batch.update({"mask": jnp.zeros((2, size, size, 1), jnp.uint8)} if arch == "unet" else {"label": jnp.zeros(2, jnp.int32)})
    for fold in range(2):
        rngs = nnx.Rngs(fold)
        model = {"cnn": lambda: SmallCNN(2, image_size=size, rngs=rngs),
                 "vgg19": lambda: VGG19Classifier(2, widths=(4, 4, 4, 4, 4), hidden=8, rngs=rngs),
                 "unet": lambda: UNet(1, 1, width=4, depth=2, rngs=rngs)}[arch]()
        model.train()
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=4e-4, schedule="cosine", steps=10)
        step(model, optimizer, batch, None)
        compiled.append(step.cache_size())
    assert step.options, "this jaxlib rejected the CPU option, so nothing went through CompiledStep's cache"
    assert compiled[1] == compiled[0]
    assert make_tx(lr=1e-3, weight_decay=4e-4) is make_tx(lr=1e-3, weight_decay=4e-4)
    assert make_tx(lr=1e-3, weight_decay=4e-4) is not make_tx(lr=2e-3, weight_decay=4e-4)
