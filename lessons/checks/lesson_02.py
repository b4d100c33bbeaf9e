"""Checkers for lesson 2 (SmallCNN and its train step): each recomputes the answer its own way and compares."""

import math

import numpy as np
from flax import nnx

from checks import expect, expect_between, ok
from jaxmri.models import SmallCNN, count_params

LR = 1e-3  # Table 3
SIDES = (32, 64, 128, 224, 256)


def check_param_formula(params_at) -> None:
    """``params_at(S)``: SmallCNN's parameter count at an S x S input, as a formula (exercise 1), compared
    with the model the library builds (abstractly, ``nnx.eval_shape``) at several sides."""
    for side in SIDES:
        want = count_params(nnx.eval_shape(lambda s=side: SmallCNN(2, image_size=s, rngs=nnx.Rngs(0))))
        got = int(params_at(side))
        expect(got == want, 1, f"at S = {side} your formula gives {got:,}, SmallCNN has {want:,} (two 2x poolings "
                               "leave an S/4 x S/4 x 32 map for fc1; count kernels and biases of all four layers)")
    ok(1, f"your formula matches SmallCNN at S = {', '.join(map(str, SIDES))}; at 256: {int(params_at(256)):,}")


def _adam_l2_steps(wd: float, lr: float = LR, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   below: float = 0.01, limit: int = 100_000) -> int:
    """PyTorch's Adam(weight_decay=wd) on a weight with no data gradient, in float64: steps until w < below."""
    w, m, v = 1.0, 0.0, 0.0
    for t in range(1, limit + 1):
        g = wd * w  # the L2 term is the whole gradient
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        if w < below:
            return t
    return limit


def check_decay_steps(adam_steps: dict, adamw_steps: dict) -> None:
    """``{wd: steps}`` until the "no gradient" weight (1.0 at the start, lr 1e-3) is below 0.01, with
    Adam-L2 (``kind="adam"``) and with AdamW (``kind="adamw"``), for each weight decay you tried (exercise 2)."""
    expect(len(adam_steps) >= 2 and len(adamw_steps) >= 1, 2,
           "give the Adam steps for at least two weight decays (4e-4 and 4e-2) and AdamW's for at least one")
    for wd, steps in adam_steps.items():
        want = _adam_l2_steps(float(wd))
        expect(abs(int(steps) - want) <= 2, 2, f"Adam-L2 with wd {wd:g}: you give {steps} steps, PyTorch's rule "
                                               f"gives {want} (count the first step after which w < 0.01)")
    for wd, steps in adamw_steps.items():
        want = math.ceil(math.log(0.01) / math.log1p(-LR * float(wd)))  # w_t = (1 - lr wd)^t without gradients
        expect_between(int(steps), 0.995 * want, 1.005 * want + 1, 2, f"AdamW steps with wd {wd:g} (w_t = "
                                                                      "(1 - lr * wd)^t with no data gradient)")
    spread = max(adam_steps.values()) / min(adam_steps.values())
    ok(2, "Adam-L2 needs " + ", ".join(f"{s} steps at wd {w:g}" for w, s in adam_steps.items())
       + f" (spread {spread:.3f}x); AdamW " + ", ".join(f"{s:,} at {w:g}" for w, s in adamw_steps.items()))


def check_first_adam_step(changes: dict) -> None:
    """``{lr: (kernel_before, kernel_after)}``: fc1's kernel of a fresh SmallCNN before and after ONE
    ``train_step`` with ``make_optimizer(model, lr=lr, weight_decay=4e-4)`` (exercise 3)."""
    expect(len(changes) >= 2, 3, "give the kernels for at least two learning rates (1e-3 and 1e-2)")
    for lr, (before, after) in changes.items():
        delta = np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))
        expect(delta.size > 1000, 3, "pass fc1's kernel (the big layer), not a single number")
        expect(bool(np.any(delta > 0)), 3, f"lr {lr:g}: nothing moved; take one train_step between the copies "
                                           "(copy with np.array(model.fc1.kernel[...]))")
        share = float(np.mean(np.abs(delta / lr - 1) < 0.01))
        expect(float(np.max(delta)) < 1.01 * lr, 3, f"lr {lr:g}: a weight moved by {np.max(delta):.3g} > lr; "
                                                    "was that more than one step?")
        expect(share > 0.8, 3, f"lr {lr:g}: only {share:.1%} of the weights moved by lr; Adam's first step "
                                "is m/sqrt(v) = g/|g| = +-1 for every weight (fresh model and optimizer, one step)")
    shares = {lr: np.mean(np.abs(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / lr - 1) < 0.01)
              for lr, (b, a) in changes.items()}
    ok(3, "one Adam step moved " + ", ".join(f"{share:.1%} of fc1 by lr = {lr:g}" for lr, share in shares.items()))
