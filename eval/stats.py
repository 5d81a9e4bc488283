"""Uncertainty of the reported numbers: intervals, paired model comparisons and claim verdicts.

Pure numpy/scipy (no TensorFlow), shared by the attack suite's per-run tables and the study tables.
Proportions come in as fractions in [0, 1]; the formatters print percentages like ``eval.output.pct``.

Two questions, two units (DESIGN.md, contract 11). "Does this trained model beat that one on these
test images?" has the test sample as its unit: ``paired_difference``, McNemar, ``combine_seeds``.
"Does method A beat method B?" is replicated by training runs, so its unit is the seed:
``seed_interval`` over the per-seed differences, ``holm`` across claims.

Usage::

    from eval import stats
    stats.wilson_interval(445, 1000)                  # (0.4145, 0.4760)
    stats.wilson_cell(0.445, 1000)                    # "44.5 [41.4, 47.6]": a table's cell
    stats.format_with_interval(0.445, 1000)           # "44.5 [41.4, 47.6] (n=1000)"
    stats.format_mean_sd([0.451, 0.439, 0.462])       # "45.1 ± 1.2"
    d = stats.paired_difference(robust_a, robust_b)   # per-sample boolean masks, same samples
    stats.verdict(d["ci_low"], d["ci_high"], ">")     # stats.HOLDS / stats.FAILS / stats.UNDECIDED
    c = stats.combine_seeds([d_seed0, d_seed1, d_seed2])
    u = stats.unpaired_difference(56, 70, 48, 80)     # independent proportions (Newcombe)
    s = stats.seed_interval([0.05, 0.03, 0.04],       # a method claim: t interval over seeds,
                            min_sd=stats.least_test_noise([(0.70, 0.65, 500), ...]))  # sd >= test noise
    stats.holm([s["p"], 0.2, 0.01])                   # [True, False, True]: which hold family-wise

Parts, top to bottom:

1. One proportion: ``wilson_interval``, ``wilson_cell``, ``format_with_interval``.
2. Across repeats: ``mean_sd``, ``format_mean_sd``.
3. Two models on the same samples: ``paired_difference`` (bootstrap CI + exact McNemar test),
   ``combine_seeds`` across seeds.
4. Two proportions on different samples: ``unpaired_difference`` (Newcombe's hybrid score).
5. Methods over seeds: ``seed_interval`` with its floor on the sd, the test noise of each per-seed
   difference (``least_test_noise`` from two accuracies, ``observed_test_noise`` from the per-sample
   flags, ``least_auc_noise`` for AUCs by Hanley–McNeil), ``t_half_width``; across claims: ``holm``.
6. ``verdict`` (from an interval), ``significance_verdict`` (from a test) and their three strings
   ``HOLDS``, ``FAILS``, ``UNDECIDED``.
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Sequence

import numpy as np
from scipy import stats as _sps

HOLDS = "holds"
FAILS = "does not hold"
UNDECIDED = "cannot be told apart at this sample size"


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return float(_sps.norm.ppf(0.5 + confidence / 2.0))


# --------------------------------------------------------------------------------------------------
# 1. One proportion


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p = k / n.

    With z the two-sided normal quantile of ``confidence``::

        centre = (p + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/(4n²))
        (centre - half, centre + half)

    Unlike the Wald interval it stays inside [0, 1] and keeps close to nominal coverage for small n
    and p near 0 or 1 (Wilson 1927, JASA 22:209; Brown, Cai & DasGupta 2001, Stat. Sci. 16:101).
    n == 0 carries no information: (0.0, 1.0).
    """
    k, n = operator.index(successes), operator.index(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={k}, n={n}")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At k = 0 or k = n the bound is exactly 0 or 1; pin it against rounding.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def wilson_cell(p: float, n: Optional[int], confidence: float = 0.95, digits: int = 1) -> str:
    """A table cell: ``p`` in percent with its Wilson interval over ``n`` samples, "44.5 [41.4,
    47.6]"; where n is unknown (None or 0), the percentage alone, "44.5". The one format of such a
    cell: the attack suite's table, the study tables and ``format_with_interval``.

    ``p`` is a fraction measured on ``n`` samples, so ``p · n`` is rounded to the count of successes.
    """
    if not n:
        return f"{100 * p:.{digits}f}"
    low, high = wilson_interval(round(p * n), n, confidence)
    return f"{100 * p:.{digits}f} [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


def format_with_interval(p: float, n: int, confidence: float = 0.95, digits: int = 1) -> str:
    """``p`` of ``n`` samples in percent with its Wilson interval: "44.5 [41.4, 47.6] (n=1000)"."""
    if n == 0:
        return "– (n=0)"
    return f"{wilson_cell(p, n, confidence, digits)} (n={n})"


# --------------------------------------------------------------------------------------------------
# 2. Across repeats (seeds)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation, sd = sqrt(Σ(x - mean)² / (m - 1)) (ddof = 1).

    One value has no spread to estimate: its sd is nan (printed "±–"), not a misleading 0.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("mean_sd needs a non-empty 1-D sequence of numbers")
    sd = float(np.std(x, ddof=1)) if x.size > 1 else float("nan")
    return float(np.mean(x)), sd


def format_mean_sd(values: Sequence[float], digits: int = 1, scale: float = 100.0) -> str:
    """Fractions as "45.1 ± 1.2" in percent (``scale=1`` for values already in the printed unit)."""
    mean, sd = mean_sd(values)
    spread = "–" if math.isnan(sd) else f" {scale * sd:.{digits}f}"
    return f"{scale * mean:.{digits}f} ±{spread}"


# --------------------------------------------------------------------------------------------------
# 3. Two models on the same samples


def _as_mask(mask, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {m.shape}")
    if m.dtype != bool:
        if m.size and not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
        m = m.astype(bool)
    return m


def _mcnemar_p(n10: int, n01: int) -> float:
    discordant = n10 + n01
    if discordant == 0:
        return 1.0
    return float(_sps.binomtest(n10, discordant, 0.5).pvalue)


def _bootstrap_ci(n10: int, n01: int, n: int, confidence: float, n_boot: int,
                  seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of (n10 - n01) / n, resampling the n pairs with replacement.

    Resampling n pairs draws their category counts from Multinomial(n, observed frequencies), and the
    difference depends on the counts only, so drawing the counts is the same bootstrap in O(n_boot).
    """
    _z(confidence)  # rejects a confidence outside (0, 1)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    freq = np.array([n10, n01, n - n10 - n01], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, freq, size=n_boot)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_difference(mask_a, mask_b, confidence: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """Compare models A and B on the same n samples from per-sample masks (True = robust / correct).

    With n10 = #(A right, B wrong) and n01 = #(A wrong, B right) (the discordant pairs)::

        diff = mean(a) - mean(b) = (n10 - n01) / n

    ``ci_low``/``ci_high``: percentile bootstrap over samples, a and b resampled jointly so the
    pairing is kept (Efron & Tibshirani 1993, ch. 13), drawn exactly through the multinomial
    counts of the four agreement categories. ``mcnemar_p``: exact two-sided McNemar test, i.e. the
    binomial test of n10 against Bin(n10 + n01, 1/2) (McNemar 1947; Fagerland, Lydersen & Laake
    2013, BMC Med. Res. Methodol. 13:91); 1.0 when there is no discordant pair.

    Returns {"diff", "ci_low", "ci_high", "mcnemar_p", "n", "n01", "n10"} of plain Python numbers.
    """
    a, b = _as_mask(mask_a, "mask_a"), _as_mask(mask_b, "mask_b")
    if a.shape != b.shape:
        raise ValueError(f"masks differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("masks are empty")
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return _paired_from_counts(n10, n01, int(a.size), confidence, n_boot, seed)


def _paired_from_counts(n10: int, n01: int, n: int, confidence: float, n_boot: int, seed: int) -> dict:
    low, high = _bootstrap_ci(n10, n01, n, confidence, n_boot, seed)
    return {"diff": (n10 - n01) / n, "ci_low": low, "ci_high": high,
            "mcnemar_p": _mcnemar_p(n10, n01), "n": n, "n01": n01, "n10": n10}


def combine_seeds(per_seed: list[dict], confidence: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """Several seeds' trained model pairs as one pool of test pairs, from their ``paired_difference``
    outputs. Not the interval of a method claim: that is ``seed_interval`` (see below).

    Each seed's model pair is evaluated on its own test set; the seeds' sample pairs are pooled into
    one sample of size N = Σ n_s with N10 = Σ n10_s and N01 = Σ n01_s, and treated as in
    ``paired_difference``::

        diff = (N10 - N01) / N = Σ n_s · diff_s / N

    which is the average of the per-seed differences when every seed has the same n (otherwise the
    n-weighted average), so the bootstrap CI and the pooled exact McNemar test (a sum of per-seed
    Bin(d_s, 1/2) is Bin(Σ d_s, 1/2) under the null) describe the same number. The interval covers
    test-sample noise only: the seeds count as extra samples, not as a sample of training runs (and
    where every seed is evaluated on the same first test images, not even as independent samples),
    so it says nothing about another training run of the same method. Read it together with
    ``per_seed_sign`` (+1 / 0 / -1 per seed) for seed-to-seed consistency.

    Returns the keys of ``paired_difference`` for the pooled counts, plus "n_seeds",
    "per_seed_diff" and "per_seed_sign".
    """
    if not per_seed:
        raise ValueError("combine_seeds needs at least one seed")
    try:
        counts = [(int(d["n10"]), int(d["n01"]), int(d["n"])) for d in per_seed]
    except KeyError as e:
        raise ValueError(f"a per-seed result lacks {e}; pass paired_difference outputs") from None
    n10, n01, n = (sum(c) for c in zip(*counts))
    out = _paired_from_counts(n10, n01, n, confidence, n_boot, seed)
    diffs = [(a - b) / m for a, b, m in counts]
    out.update(n_seeds=len(counts), per_seed_diff=diffs, per_seed_sign=[int(np.sign(d)) for d in diffs])
    return out


# --------------------------------------------------------------------------------------------------
# 4. Two proportions on different samples


def unpaired_difference(k_a: int, n_a: int, k_b: int, n_b: int, confidence: float = 0.95) -> dict:
    """Difference of two independent proportions k_a/n_a - k_b/n_b with Newcombe's hybrid score CI.

    From the Wilson intervals (l_a, u_a) and (l_b, u_b) of each proportion (Newcombe 1998,
    Stat. Med. 17:873, method 10)::

        low  = d - sqrt((p_a - l_a)² + (u_b - p_b)²)
        high = d + sqrt((u_a - p_a)² + (p_b - l_b)²)

    For counts out of n samples (accuracies on different sample sets). An AUC is not such a
    proportion; this interval does not apply to it.

    Returns {"diff", "ci_low", "ci_high", "n_a", "n_b"}.
    """
    if n_a == 0 or n_b == 0:
        raise ValueError("both proportions need n > 0")
    la, ua = wilson_interval(k_a, n_a, confidence)
    lb, ub = wilson_interval(k_b, n_b, confidence)
    pa, pb = k_a / n_a, k_b / n_b
    d = pa - pb
    return {"diff": d,
            "ci_low": d - math.hypot(pa - la, ub - pb),
            "ci_high": d + math.hypot(ua - pa, pb - lb),
            "n_a": n_a, "n_b": n_b}


# --------------------------------------------------------------------------------------------------
# 5. Methods over seeds, and many claims at once


def t_half_width(sd: float, n_seeds: int, confidence: float = 0.95) -> float:
    """Half-width t_{(1+confidence)/2, n-1} · sd / √n of the t interval of a mean over n seeds; nan
    for fewer than two seeds (no degree of freedom)."""
    _z(confidence)  # rejects a confidence outside (0, 1)
    if n_seeds < 2:
        return float("nan")
    return float(_sps.t.ppf(0.5 + confidence / 2.0, n_seeds - 1) * sd / math.sqrt(n_seeds))


def seed_interval(per_seed_diffs: Sequence[float], margin: float = 0.0, confidence: float = 0.95,
                  min_sd: float = 0.0) -> dict:
    """The interval of a method claim: the seed is the unit (DESIGN.md, contract 11).

    ``per_seed_diffs``: one difference per training seed, a_s - b_s (for a threshold claim
    a_s - threshold). With m their mean, sd their sample sd and n their count::

        ci = m ± t_{(1+confidence)/2, n-1} · sd / √n
        p  = 2 · P(T_{n-1} > |m - margin| / (sd / √n))     two-sided p of "diff = margin"

    the one-sample (paired) t interval and test. Each d_s already carries its seed's test-sample
    noise, so the interval covers both the training-run and the test-sample variance. A two-level
    (cluster) bootstrap over seeds then test images would resample only n = 3-5 clusters, and its
    percentile interval under-covers badly at such n; the t interval is the small-n choice.

    ``min_sd``: a floor on the sd in both formulas, the test-sample noise each d_s is known to carry
    (``least_test_noise``). A few seeds can agree more closely than that by chance, or exactly on
    the 1/n grid of accuracies (+0.4, +0.4 points on 250 images: sd 0), and a zero-width interval
    would call a one-image difference a finding. The interval excludes ``margin`` exactly when p <
    1 - confidence. Identical d_s with ``min_sd`` 0 give a zero-width interval and p = 0 (p = 1 if
    they equal the margin). One seed has no spread to estimate: ``ci_low``, ``ci_high``, ``p`` and
    ``sd`` are None.

    Returns {"diff", "ci_low", "ci_high", "p", "sd" (the one both formulas used), "n_seeds"}.
    """
    d = np.asarray(per_seed_diffs, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("seed_interval needs a non-empty 1-D sequence of per-seed differences")
    n, mean = int(d.size), float(d.mean())
    out = {"diff": mean, "ci_low": None, "ci_high": None, "p": None, "sd": None, "n_seeds": n}
    if n < 2:
        return out
    sd = max(float(d.std(ddof=1)), float(min_sd))
    half = t_half_width(sd, n, confidence)
    if sd > 0:
        p = float(2 * _sps.t.sf(abs(mean - margin) / (sd / math.sqrt(n)), n - 1))
    else:
        p = 1.0 if mean == margin else 0.0
    return dict(out, ci_low=mean - half, ci_high=mean + half, p=p, sd=sd)


def least_test_noise(per_seed: Sequence[tuple[float, float, int]]) -> float:
    """The smallest sd of a per-seed difference of two accuracies that its test images allow:
    ``per_seed`` holds (acc_a, acc_b, n) per seed, both measured on the same n images (acc_b None:
    a claim against a fixed threshold). Paired on the same images, d = acc_a - acc_b has variance
    ((n10 + n01)/n - d^2)/n, n10 (n01) the images only a (only b) gets right; the least
    n10 + n01 the accuracies allow is n·|d|, hence (|d| - d^2)/n. Against a threshold the
    variance is acc_a(1 - acc_a)/n. Returns the root of the mean over seeds (seed_interval's
    ``min_sd``)."""
    var = [(a * (1.0 - a) if b is None else abs(a - b) - (a - b) ** 2) / n for a, b, n in per_seed]
    return math.sqrt(sum(var) / len(var)) if var else 0.0


def observed_test_noise(per_seed: Sequence[tuple[float, int, int]]) -> float:
    """``least_test_noise`` from the per-sample flags instead of the least disagreement the two
    accuracies allow: ``per_seed`` holds (d, n, n_disagree) per seed, d = acc_a - acc_b on the same n
    images of which n_disagree = n10 + n01 have one model right and the other wrong. The variance of
    the paired difference is (n_disagree/n - d^2)/n; returns the root of its mean over seeds."""
    var = [max(k / n - d * d, 0.0) / n for d, n, k in per_seed]
    return math.sqrt(sum(var) / len(var)) if var else 0.0


def auc_variance(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982, Radiology 143:29) variance of an empirical AUC on n_pos positives and
    n_neg negatives: [A(1-A) + (n_pos-1)(Q1-A^2) + (n_neg-1)(Q2-A^2)] / (n_pos n_neg), with
    Q1 = A/(2-A), Q2 = 2A^2/(1+A). At A = 1 it is 0: such an AUC is floored by ``auc_floor_variance``."""
    a = float(auc)
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"an AUC needs positives and negatives, got {n_pos} and {n_neg}")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    return max(a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a), 0.0) / (n_pos * n_neg)


def auc_floor_variance(auc: float, n_pos: int, n_neg: int) -> float:
    """``auc_variance``, no smaller than that of an AUC one positive-negative pair below the perfect
    1 (or above 0): an AUC of 1.000 on 60 positives is not known to the last pair."""
    edge = 1.0 - 1.0 / (n_pos * n_neg)
    return auc_variance(min(max(float(auc), 1.0 - edge), edge), n_pos, n_neg)


def least_auc_noise(per_seed: Sequence[tuple[tuple[float, int, int], Optional[tuple[float, int, int]]]]) -> float:
    """The test-sample sd of a per-seed AUC (threshold claim: b None) or AUC difference: per seed
    ((auc_a, n_pos_a, n_neg_a), (auc_b, n_pos_b, n_neg_b) or None), each side's Hanley–McNeil
    variance (``auc_floor_variance``), summed for a difference (two models' adversarial positives
    differ, so their AUCs are treated as independent: the larger, safe floor). Returns the root of
    the mean over seeds (seed_interval's ``min_sd``)."""
    var = [auc_floor_variance(*a) + (auc_floor_variance(*b) if b is not None else 0.0) for a, b in per_seed]
    return math.sqrt(sum(var) / len(var)) if var else 0.0


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test of m hypotheses at family-wise error rate ``alpha`` (Holm 1979, Scand.
    J. Statist. 6:65): sort the p-values, p_(1) <= ... <= p_(m); reject H_(1), ..., H_(k) for the
    largest k with p_(j) <= alpha / (m - j + 1) for every j <= k, keep the rest. Returns, in the
    input's order, True for each rejected hypothesis."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.isnan(p).any() or ((p < 0) | (p > 1)).any():
        raise ValueError("holm needs a 1-D sequence of p-values in [0, 1]")
    m = p.size
    rejected = [False] * m
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


# --------------------------------------------------------------------------------------------------
# 6. Verdicts


def verdict(ci_low: float, ci_high: float, direction: str = ">", margin: float = 0.0) -> str:
    """Verdict on the claim "diff <direction> margin" (diff = A - B) from its confidence interval.

    For ">": ``HOLDS`` if ci_low > margin, ``FAILS`` if ci_high < margin; for "<" the reverse
    (``HOLDS`` if ci_high < margin, ``FAILS`` if ci_low > margin). Otherwise the interval contains
    the margin and the answer is ``UNDECIDED``. A test at level 1 - confidence by interval inversion.
    """
    if direction not in (">", "<"):
        raise ValueError(f'direction must be ">" or "<", got {direction!r}')
    if ci_low > ci_high:
        raise ValueError(f"ci_low {ci_low} > ci_high {ci_high}")
    above, below = ci_low > margin, ci_high < margin
    if direction == "<":
        above, below = below, above
    return HOLDS if above else FAILS if below else UNDECIDED


def significance_verdict(diff: float, significant: bool, direction: str = ">", margin: float = 0.0) -> str:
    """Verdict on "diff <direction> margin" from a test of diff = margin (e.g. after ``holm``): a
    significant difference holds or fails by its side of the margin; otherwise ``UNDECIDED``."""
    side = verdict(diff, diff, direction, margin)  # diff's side of the margin
    return side if significant else UNDECIDED
