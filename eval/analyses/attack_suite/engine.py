"""The attack suite's computation, without a file: one attack over n samples batch by batch (each
batch seeded by its first test index), every x_adv checked inside the ε-ball and [0, 1], the
per-sample robust flags, and the worst case over several attacks.

Usage::

    from eval.analyses.attack_suite import engine
    robust = engine.robust_mask(model, "pgd", x[:n], y[:n], params, batch_size=500, seed=0)   # [n] bool
    engine.check_bounds(x, x_adv, eps=0.1)          # BoundsError: never clipped, never counted
    engine.any_attack(entries, masks)               # {robust_accuracy, n_samples, attacks} or None

A sample is robust if the model is right on the clean AND the adversarial input (DESIGN.md,
contract 7). Because a batch's seed is ``batch_seed(seed, its first test index)``, the samples of
an attack can be cut into shards on batch boundaries, computed in separate processes and merged
into exactly the flags of one process (eval.analyses.attack_suite.run.shard_mask).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from eval.batches import batch_seed, predict_labels
from eval.progress import Progress

TOLERANCE = 1e-6  # float32 slack of the bounds check


class BoundsError(ValueError):
    """An attack returned x_adv outside the ε-ball or [0, 1]: its result must not count."""


def check_bounds(x: np.ndarray, x_adv: np.ndarray, eps: Optional[float], tol: float = TOLERANCE,
                 indices: Optional[np.ndarray] = None, what: str = "x_adv") -> None:
    """Raise BoundsError unless every x_adv is finite, within L∞ distance eps (+ tol) of x and in
    [0, 1] (± tol). Nothing is clipped: an attack that leaves the ball has a bug, and clipping would
    hide it while changing what was measured.

    :param indices: test-set index of each row of x, for the message (default 0, 1, ...).
    """
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv)
    if x_adv.shape != x.shape:
        raise BoundsError(f"{what} has shape {x_adv.shape}, x has {x.shape}")
    index = np.arange(len(x)) if indices is None else np.asarray(indices)
    flat = x_adv.reshape(len(x_adv), -1).astype(np.float32)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise BoundsError(f"{what} of test sample {index[int(np.argmax(bad))]} is not finite")
    if eps is not None:
        dist = np.abs(flat - x.reshape(len(x), -1)).max(axis=1, initial=0.0)
        worst = int(np.argmax(dist)) if len(dist) else 0
        if len(dist) and dist[worst] > eps + tol:
            raise BoundsError(f"{what} of test sample {index[worst]} is {dist[worst]:.7g} from x "
                              f"in L∞, outside the ε-ball (eps={eps:.7g}, tolerance {tol:g})")
    lo, hi = flat.min(axis=1, initial=0.0), flat.max(axis=1, initial=1.0)
    out = (lo < -tol) | (hi > 1 + tol)
    if out.any():
        i = int(np.argmax(out))
        raise BoundsError(f"{what} of test sample {index[i]} leaves [0, 1] "
                          f"(min {lo[i]:.7g}, max {hi[i]:.7g}, tolerance {tol:g})")


def robust_mask(model: Callable, name: str, x: np.ndarray, y: np.ndarray, params: dict,
                batch_size: int = 500, bar: Optional[Progress] = None, seed: Optional[int] = None,
                first_index: int = 0, keep: Optional[dict[str, np.ndarray]] = None,
                done: Optional[dict[int, np.ndarray]] = None,
                on_batch: Optional[Callable[[int, np.ndarray], None]] = None) -> np.ndarray:
    """Per sample: the model is right on x AND on the attack's x_adv. Only samples it gets right
    are attacked (the others cannot count as robust), as AutoAttack's own evaluation does.

    :param bar: advanced by every batch (eval.progress.Progress, in samples), or None for silence.
    :param seed: if set, every batch is seeded with ``batch_seed(seed, its first test index)``.
    :param first_index: test-set index of x[0] (for the seeds and the error messages).
    :param keep: if given, filled with "x_adv" (x where a sample was not attacked) and the attack's
        per-sample details (``attacks.registry.run_detailed``; 0 where not attacked).
    :param done: flags of batches finished before, by the offset of their first sample in x: read
        back, not attacked again (a batch's seed depends only on its first index, so they are the
        flags this call would compute). Not with ``keep``.
    :param on_batch: called with (offset, flags) after each batch attacked here.
    :raises BoundsError: some x_adv outside the ε-ball or [0, 1].
    :raises attacks.errors.AttackUnavailable: the attack's library is missing.
    """
    import keras
    from attacks import registry

    robust = np.zeros(len(x), bool)
    if keep is not None:
        keep["x_adv"] = np.array(x, np.float32)
    done = done or {}
    if done and keep is not None:
        raise ValueError("robust_mask: finished batches cannot be read back with keep (their x_adv are not kept)")
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if start in done:
            robust[start:start + len(xb)] = done[start]
            if bar is not None:
                bar.add(len(xb))
            continue
        idx = np.flatnonzero(predict_labels(model, xb, batch_size) == yb)
        if idx.size:
            if seed is not None:
                keras.utils.set_random_seed(batch_seed(seed, first_index + start))
            x_adv, details = registry.run_detailed(name, model, xb[idx], yb[idx], **params)
            # Checked on the whole returned batch before any of it counts.
            check_bounds(xb[idx], x_adv, params.get("eps"), indices=first_index + start + idx,
                         what=f"{name} x_adv")
            robust[start + idx] = predict_labels(model, np.asarray(x_adv, np.float32), batch_size) == yb[idx]
            if keep is not None:
                keep["x_adv"][start + idx] = x_adv
                for key, value in details.items():
                    keep.setdefault(key, np.zeros(len(x), value.dtype))[start + idx] = value
        if on_batch is not None:
            on_batch(start, robust[start:start + len(xb)])
        if bar is not None:
            bar.add(len(xb))
    return robust


def worst_case(masks: dict[str, np.ndarray], names: list[str], n: Optional[int] = None) -> np.ndarray:
    """Per sample of the first min(n, every mask's length): robust under every attack of ``names``."""
    n = min([len(masks[a]) for a in names] + ([n] if n is not None else []))
    return np.logical_and.reduce([np.asarray(masks[a][:n], bool) for a in names])


def any_attack_flags(entries: dict[str, dict], masks: dict[str, np.ndarray]) -> Optional[tuple[list[str], np.ndarray]]:
    """(the attacks ``any_attack`` takes the worst case over, its per-sample flags), or None."""
    names = [n for n, e in entries.items() if "robust_accuracy" in e and n in masks]
    if not names:
        return None
    if "cascade" in names:
        names = [n for n in names if len(masks[n]) >= len(masks["cascade"])]
    return names, worst_case(masks, names)


def any_attack(entries: dict[str, dict], masks: dict[str, np.ndarray]) -> Optional[dict]:
    """The per-sample worst case over the finished attacks that have robust flags: a sample counts
    only if it survives every one of them (DESIGN.md, contract 7). The attacks ran on the first
    n_samples test samples each, so the shared set is the first min(n_samples). Where the white-box
    cascade ran (attacks/cascade.py), the worst case is over the attacks that ran on at least its
    samples, on those: the attacks on smaller subsets (SPSA, AutoAttack, B&B) are masking checks of
    it (eval/sanity.py check 9), not a reason to shrink the worst case to their few images.

    :param entries: attack name -> its attack_suite.json entry (only finished ones count).
    :param masks: attack name -> its per-sample robust flags, already matched to the entry.
    :return: {robust_accuracy, n_samples, attacks}, or None when no attack has flags.
    """
    found = any_attack_flags(entries, masks)
    if found is None:
        return None
    names, robust = found
    return {"robust_accuracy": float(robust.mean()) if len(robust) else 0.0, "n_samples": len(robust),
            "attacks": names}
