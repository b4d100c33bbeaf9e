"""Checkers for lesson 3 (freezing VGG19): each rebuilds the lesson's tiny VGG19 and recomputes the answer."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from checks import expect, ok
from jaxmri.data.augment import to_float
from jaxmri.models import VGG19Classifier
from jaxmri.training.classify_steps import train_step
from jaxmri.training.losses import cross_entropy
from jaxmri.training.optim import make_tx

TINY = dict(widths=(4, 8, 8, 16, 16), hidden=32)  # the lesson's channel-reduced VGG19
LR, WEIGHT_DECAY = 1e-3, 4e-4
FINETUNED = {"head", "fc1", "fc2", "convs.12", "convs.13", "convs.14", "convs.15"}


def _params(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, path)): np.array(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def check_finetune_filter(wrt) -> None:
    """``wrt``: an NNX filter selecting the parameters of ``head``, ``fc1``, ``fc2`` and ``convs.12`` to
    ``convs.15`` (exercise 1). Checked on a fresh tiny VGG19: what it selects, and one train step with
    ``nnx.Optimizer(model, tx, wrt=wrt)`` moves exactly those layers."""
    model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(0))
    selected = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, wrt))}
    every = _params(model)
    expect(selected <= set(every), 1, f"the filter selects non-parameters: {sorted(selected - set(every))[:3]}; "
                                      "combine it with nnx.Param (nnx.All)")
    want = {k for k in every if _layer(k) in FINETUNED}
    expect(selected == want, 1, f"missing {sorted({_layer(k) for k in want - selected})}, extra "
                                f"{sorted({_layer(k) for k in selected - want})}")
    optimizer = nnx.Optimizer(model, make_tx(lr=LR, weight_decay=WEIGHT_DECAY), wrt=wrt)
    images = jax.random.randint(jax.random.key(0), (8, 64, 64, 3), 0, 256).astype(jnp.uint8)
    batch = {"image": images, "label": jnp.arange(8, dtype=jnp.int32) % 2, "weight": jnp.ones(8, jnp.float32)}
    model.eval()
    train_step(model, optimizer, batch, None)
    after = _params(model)
    moved = {_layer(k) for k in every if not np.array_equal(every[k], after[k])}
    expect(moved == FINETUNED, 1, f"after one step these layers moved: {sorted(moved)}, expected {sorted(FINETUNED)}")
    ok(1, f"{len(want)} parameters in {len(FINETUNED)} layers train, the other {len(every) - len(want)} stay "
          "bit-identical")


def _gradients(model, batch) -> dict[str, np.ndarray]:
    """The loss's gradient in every parameter, by jax.grad of a pure function of the parameters."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    images = to_float(jnp.asarray(batch["image"]))

    def loss(p):
        return cross_entropy(nnx.merge(graphdef, p, rest)(images), jnp.asarray(batch["label"]),
                             jnp.asarray(batch["weight"]))

    grads = jax.jit(jax.grad(loss))(params)  # compiled: eager VGG19 ops would each compile on their own
    return {".".join(map(str, path)): np.asarray(g[...]) for path, g in nnx.to_flat_state(grads)}


def check_trap_step(batch, changes: dict, seed: int = 0) -> None:
    """``changes``: ``change_per_layer`` after ONE step of the trap (``optax.masked``) optimizer on
    ``VGG19Classifier(2, **TINY, rngs=nnx.Rngs(seed))`` in eval mode, ``train_step(..., batch, None)``
    (exercise 2). Frozen layers must have moved by their gradient, the head by about ``lr``."""
    model = VGG19Classifier(2, **TINY, rngs=nnx.Rngs(seed))
    model.eval()
    grads = _gradients(model, batch)
    weights = _params(model)
    largest: dict[str, float] = {}
    scale: dict[str, float] = {}
    for key, g in grads.items():
        largest[_layer(key)] = max(largest.get(_layer(key), 0.0), float(np.max(np.abs(g))))
        scale[_layer(key)] = max(scale.get(_layer(key), 0.0), float(np.max(np.abs(weights[key]))))
    expect(set(changes) == set(largest), 2, f"give one change per layer ({len(largest)} layers: convs.0 .. head), "
                                            "as change_per_layer returns")
    for layer, g in largest.items():
        if layer == "head":
            expect(0.5 * LR < changes[layer] <= 1.001 * LR, 2,
                   f"the head moved by {changes[layer]:.3g}; Adam's first step moves it by at most lr = {LR:g}")
            continue
        tolerance = 1e-3 * g + 4 * np.finfo(np.float32).eps * scale[layer]  # w + g is rounded to float32
        expect(abs(changes[layer] - g) <= tolerance, 2,
               f"{layer} moved by {changes[layer]:.4g} but its largest gradient is {g:.4g}; one trap step adds the raw "
               "gradient to a frozen weight (use model.eval(), key None and a fresh model)")
    bigger = sorted((layer for layer in largest if layer != "head" and changes[layer] > changes["head"]),
                    key=lambda layer: -changes[layer])
    ok(2, f"every frozen layer moved by its gradient; {len(bigger)} of {len(largest) - 1} moved more than the head "
          f"({changes['head']:.1e}), the most {bigger[0] if bigger else '-'} "
          f"({changes[bigger[0]] if bigger else 0:.1e})")


def check_embedding_cache(model, images, embeddings, logits_from_cache) -> None:
    """``embeddings``: the eval-mode ``model.embed`` of ``images`` (uint8 (N, H, W, 3), as cached by
    ``jaxmri.training.classify.Evaluator``), computed once before the head trained; after training,
    ``logits_from_cache(model, embeddings)`` must equal ``model``'s logits of ``images`` (exercise 3)."""
    x = to_float(jnp.asarray(images))
    expect(bool(model.freeze_backbone), 3, "the cache is exact only for a frozen backbone; use the paper's model")
    model.eval()
    graphdef, state = nnx.split(model)
    embed = jax.jit(lambda state, x: nnx.merge(graphdef, state).embed(x))
    now = np.asarray(embed(state, x))
    expect(bool(np.allclose(np.asarray(embeddings), now, atol=1e-5)), 3,
           "your cached embeddings are not the model's eval-mode embeddings: compute them after model.eval() "
           "(dropout off), and only a frozen backbone keeps them valid while the head trains")
    got = np.asarray(logits_from_cache(model, jnp.asarray(embeddings)))
    want = np.asarray(jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, x))
    expect(got.shape == want.shape, 3, f"logits of shape {got.shape}, expected {want.shape}")
    expect(bool(np.allclose(got, want, atol=1e-5)), 3, "the logits from the cache differ from the model's; "
                                                       "re-run only model.head on the cached embeddings")
    model.train()
    noisy_graphdef, state = nnx.split(model)  # a new graph (dropout on): a new jitted function, not embed's cache
    noisy_embed = jax.jit(lambda s, x: nnx.merge(noisy_graphdef, s).embed(x))
    noisy = float(np.max(np.abs(np.asarray(noisy_embed(state, x)) - now)))
    model.eval()
    ok(3, f"head(cached embeddings) equals the model's logits for {len(want)} images; with dropout on, embed "
          f"changes by up to {noisy:.2f}")
