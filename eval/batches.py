"""The test data and the model's forward passes, in batches: what every evaluation runs on. A
model maps [0, 1] NHWC images to logits (an Ensemble: log f^en, DESIGN.md contract 3).

Usage::

    from eval import batches
    x, y = batches.test_samples("fashion_mnist", n_samples=1000)    # the first 1000 test images
    z = batches.logits(ens, x)                                     # [B, C], numpy
    pred = batches.predict_labels(ens, x)                          # [B], argmax of the logits
    zm = batches.member_logits(ens, x)                             # [N, B, C]
    batches.seed_everything(0)
    x_adv = batches.craft("pgd", ens, x, y, eps=0.1, eps_iter=0.01, nb_iter=20)

Crafting goes through ``attacks.registry.run``, the one entry point to the attack adapters, or an
adapter given as a function; ``craft`` is the one seeded batched attack loop of the analyses (the
attack suite's ``robust_mask`` seeds its batches with the same ``batch_seed``).
TensorFlow is imported lazily, inside the functions that need it, so a CLI rejects bad input in a
fraction of a second.
"""
from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np

from cce_tf.cli_flags import UsageError

if TYPE_CHECKING:
    from eval.progress import Progress


def draw_order(n_test: int, draw: Optional[int]) -> np.ndarray:
    """The order test images are taken in: a seeded random permutation of the test set (``draw``, the
    same for every method at one training seed, so comparisons stay paired, and another at the next
    seed, so a claim's interval over seeds carries the images' variance too), or the test set's own
    order (None: the first n, the paper's protocol). The first n of one draw are a prefix of its
    first 2n: every attack's subset is a subset of the larger ones."""
    return np.arange(n_test) if draw is None else np.random.default_rng([0xD7A3, int(draw)]).permutation(n_test)


def draw_setting(draw: Optional[int]) -> dict:
    """The draw as a reuse setting: {"draw": draw}, or {} for the first n, so results computed on the
    first n before draws existed stay reusable."""
    return {} if draw is None else {"draw": draw}


def test_samples(dataset: str, n_samples: Optional[int] = None, draw: Optional[int] = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The first n_samples test images and labels (all when None or 0) in ``draw_order``."""
    from cce_tf import data

    x, y = data.load(dataset, "test")
    if draw is not None:
        order = draw_order(len(x), draw)
        x, y = x[order], y[order]
    if n_samples is not None and n_samples < 0:
        raise UsageError(f"--n_samples must be >= 0, got {n_samples}")
    if n_samples:
        x, y = x[:n_samples], y[:n_samples]
    return np.asarray(x, np.float32), np.asarray(y, np.int64)


def test_size(dataset: str, n_samples: Optional[int]) -> int:
    """How many test samples ``test_samples(dataset, n_samples)`` returns (no data loaded)."""
    from cce_tf import data

    return min(n_samples or data.TEST_SIZES[dataset], data.TEST_SIZES[dataset])


def _batches(n: int, batch_size: int):
    batch_size = max(1, int(batch_size))
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


_FORWARD: "weakref.WeakKeyDictionary[Any, Callable]" = weakref.WeakKeyDictionary()


def _compiled_forward(model) -> Callable:
    """``tf.function`` of model(x, training=False), one per model (weakly cached)."""
    import tensorflow as tf

    if model not in _FORWARD:
        model_ref = weakref.ref(model)
        _FORWARD[model] = tf.function(lambda x: model_ref()(x, training=False),
                                      reduce_retracing=True)
    return _FORWARD[model]


def logits(model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits of ``model`` (an Ensemble: log f^en) on x, numpy [B, C]."""
    import tensorflow as tf

    fn = _compiled_forward(model)
    out = [fn(tf.constant(x[s])).numpy() for s in _batches(len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict_labels(model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted labels, numpy [B]: the argmax of ``logits``."""
    return logits(model, x, batch_size).argmax(axis=-1)


def member_logits(ensemble, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Every member's logits on x, numpy [N, B, C]."""
    return np.stack([logits(m, x, batch_size) for m in ensemble.members])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy_of_logits(z: np.ndarray) -> np.ndarray:
    """H(softmax(z)) per sample, natural log (cce_tf.losses.entropy on the probabilities)."""
    import tensorflow as tf

    from cce_tf.losses import entropy

    return entropy(tf.nn.softmax(tf.constant(z, tf.float32), axis=-1)).numpy()


def batch_seed(seed: int, index: int) -> int:
    """The random seed of the attack batch that starts at test sample ``index``: a batch's result
    depends on its samples and the seed only, so the samples can be split into shards (on batch
    boundaries) across processes and merged into exactly the result of one process."""
    return (int(seed) * 1_000_003 + int(index)) % 2 ** 31


def craft(attack: Union[str, Callable], model, x: np.ndarray, y: np.ndarray, batch_size: int = 500,
          bar: Optional["Progress"] = None, seed: Optional[int] = None, **params: Any) -> np.ndarray:
    """x_adv of ``attack`` (a name of ``attacks.registry``, run through ``attacks.registry.run``, or
    an adapter ``attack(model, x, y, **params)``) against ``model`` on (x, y), TRUE labels, crafted
    batch by batch; ``bar`` advances by each batch. ``seed``: every batch is seeded with
    ``batch_seed(seed, its first index)`` (None: the caller seeded once, before)."""
    from attacks import registry

    fn = attack if callable(attack) else functools.partial(registry.run, attack)
    out = []
    for s in _batches(len(x), batch_size):
        if seed is not None:
            seed_everything(batch_seed(seed, s.start))
        out.append(np.asarray(fn(model, x[s], y[s], **params), np.float32))
        if bar is not None:
            bar.add(s.stop - s.start)
    return np.concatenate(out) if out else np.asarray(x, np.float32).copy()


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and TF (PGD's random start draws from TF's global generator)."""
    import keras

    keras.utils.set_random_seed(int(seed))
