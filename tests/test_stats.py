"""eval.stats against published values, scipy and hand computations."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from eval import stats


def masks(n10, n01, n11, n00):
    """Paired masks with the given agreement counts (a right/b wrong, a wrong/b right, both, neither)."""
    a = np.array([1] * n10 + [0] * n01 + [1] * n11 + [0] * n00, dtype=bool)
    b = np.array([0] * n10 + [1] * n01 + [1] * n11 + [0] * n00, dtype=bool)
    return a, b


# --- Wilson -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (81, 263, 0.2553, 0.3662),  # Newcombe 1998, Stat. Med. 17:857, Table I
])
def test_wilson_published_values(k, n, low, high):
    assert stats.wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (81, 263), (999, 1000)])
def test_wilson_symmetric_and_contains_p(k, n):
    low, high = stats.wilson_interval(k, n)
    mlow, mhigh = stats.wilson_interval(n - k, n)
    assert (low, high) == pytest.approx((1 - mhigh, 1 - mlow), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_wider_at_higher_confidence():
    l95, h95 = stats.wilson_interval(30, 100)
    l99, h99 = stats.wilson_interval(30, 100, confidence=0.99)
    assert l99 < l95 and h99 > h95


def test_wilson_n0_and_invalid():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    for k, n in [(-1, 10), (11, 10), (1, -1)]:
        with pytest.raises(ValueError):
            stats.wilson_interval(k, n)
    with pytest.raises(ValueError):
        stats.wilson_interval(1, 10, confidence=1.0)


def test_format_with_interval():
    assert stats.format_with_interval(0.445, 1000) == "44.5 [41.4, 47.6] (n=1000)"
    assert stats.format_with_interval(0.0, 0) == "– (n=0)"


# --- mean ± sd ----------------------------------------------------------------------------------


def test_mean_sd():
    mean, sd = stats.mean_sd([0.451, 0.439, 0.462])
    assert mean == pytest.approx(0.450667)
    assert sd == pytest.approx(np.std([0.451, 0.439, 0.462], ddof=1))
    assert stats.format_mean_sd([0.451, 0.439, 0.462]) == "45.1 ± 1.2"
    assert math.isnan(stats.mean_sd([0.4])[1])
    assert stats.format_mean_sd([0.4]) == "40.0 ±–"
    assert stats.format_mean_sd([45.1, 44.9], scale=1) == "45.0 ± 0.1"
    with pytest.raises(ValueError):
        stats.mean_sd([])


# --- paired_difference --------------------------------------------------------------------------


def test_paired_identical_masks():
    a = np.arange(500) % 3 == 0
    d = stats.paired_difference(a, a.copy())
    assert d == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "mcnemar_p": 1.0, "n": 500, "n01": 0, "n10": 0}


def test_paired_clearly_better_holds_and_reversed_fails():
    a, b = masks(n10=300, n01=100, n11=900, n00=700)      # n = 2000, a right on 60%, b on 50%
    assert (a.mean(), b.mean()) == (0.6, 0.5)
    d = stats.paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.1)
    assert 0 < d["ci_low"] < 0.1 < d["ci_high"]
    assert d["mcnemar_p"] < 1e-20
    assert stats.verdict(d["ci_low"], d["ci_high"], ">") == stats.HOLDS
    r = stats.paired_difference(b, a)
    assert (r["n10"], r["n01"]) == (100, 300)
    assert stats.verdict(r["ci_low"], r["ci_high"], ">") == stats.FAILS
    assert stats.verdict(r["ci_low"], r["ci_high"], "<") == stats.HOLDS


def test_paired_noisy_is_undecided():
    a, b = masks(n10=11, n01=10, n11=90, n00=89)           # n = 200, one discordance apart
    d = stats.paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.005)
    assert d["ci_low"] < 0 < d["ci_high"]
    assert d["mcnemar_p"] == pytest.approx(1.0)
    assert stats.verdict(d["ci_low"], d["ci_high"], ">") == stats.UNDECIDED


def test_mcnemar_exact_p():
    rng = np.random.default_rng(3)
    a, b = rng.random(300) < 0.55, rng.random(300) < 0.45
    d = stats.paired_difference(a, b)
    assert d["mcnemar_p"] == pytest.approx(sps.binomtest(d["n10"], d["n10"] + d["n01"], 0.5).pvalue)
    # By hand: 5 vs 0 discordant -> 2 · (1/2)^5; 1 vs 4 -> 2 · (1 + 5)/2^5.
    assert stats.paired_difference(*masks(5, 0, 10, 10))["mcnemar_p"] == pytest.approx(0.0625)
    assert stats.paired_difference(*masks(1, 4, 10, 10))["mcnemar_p"] == pytest.approx(0.375)


def test_bootstrap_matches_normal_approximation_for_large_n():
    n, n10, n01 = 10000, 1200, 800
    d = stats.paired_difference(*masks(n10, n01, 5000, n - 5000 - n10 - n01))
    p10, p01 = n10 / n, n01 / n
    half = 1.959964 * math.sqrt((p10 + p01 - (p10 - p01) ** 2) / n)
    assert d["ci_low"] == pytest.approx(0.04 - half, abs=0.005)
    assert d["ci_high"] == pytest.approx(0.04 + half, abs=0.005)


def test_paired_is_seeded_and_accepts_01_masks():
    a, b = masks(40, 25, 100, 35)
    d = stats.paired_difference(a, b, seed=7)
    assert stats.paired_difference(a.astype(int), b.astype(int), seed=7) == d
    assert stats.paired_difference(a, b, seed=8)["diff"] == d["diff"]


def test_paired_rejects_bad_masks():
    with pytest.raises(ValueError):
        stats.paired_difference(np.ones(10, bool), np.ones(11, bool))
    with pytest.raises(ValueError):
        stats.paired_difference(np.zeros(0, bool), np.zeros(0, bool))
    with pytest.raises(ValueError):
        stats.paired_difference(np.full(3, 2), np.ones(3, int))


# --- combine_seeds ------------------------------------------------------------------------------


def test_combine_seeds_hand_counts():
    per_seed = [{"n10": 60, "n01": 40, "n": 1000}, {"n10": 55, "n01": 45, "n": 1000},
                {"n10": 30, "n01": 50, "n": 1000}]
    c = stats.combine_seeds(per_seed)
    assert (c["n"], c["n10"], c["n01"], c["n_seeds"]) == (3000, 145, 135, 3)
    assert c["diff"] == pytest.approx(10 / 3000)
    assert c["per_seed_diff"] == pytest.approx([0.02, 0.01, -0.02])
    assert c["per_seed_sign"] == [1, 1, -1]
    assert c["mcnemar_p"] == pytest.approx(sps.binomtest(145, 280, 0.5).pvalue)
    assert stats.verdict(c["ci_low"], c["ci_high"]) == stats.UNDECIDED


def test_combine_seeds_equals_pooled_masks():
    seeds = [masks(30, 10, 100, 60), masks(25, 12, 110, 53)]
    per_seed = [stats.paired_difference(a, b) for a, b in seeds]
    a_all, b_all = (np.concatenate(m) for m in zip(*seeds))
    pooled = stats.paired_difference(a_all, b_all)
    c = stats.combine_seeds(per_seed)
    assert {k: c[k] for k in pooled} == pooled
    assert c["per_seed_sign"] == [1, 1]


def test_combine_seeds_weights_unequal_n_and_validates():
    c = stats.combine_seeds([{"n10": 10, "n01": 0, "n": 100}, {"n10": 0, "n01": 0, "n": 300}])
    assert c["diff"] == pytest.approx(10 / 400)           # n-weighted, not (0.1 + 0) / 2
    assert c["per_seed_sign"] == [1, 0]
    with pytest.raises(ValueError):
        stats.combine_seeds([])
    with pytest.raises(ValueError):
        stats.combine_seeds([{"diff": 0.1}])


# --- unpaired_difference ------------------------------------------------------------------------


@pytest.mark.parametrize("k_a, n_a, k_b, n_b, low, high", [
    (56, 70, 48, 80, 0.0524, 0.3339),   # Newcombe 1998, Stat. Med. 17:873, Table II, method 10
    (9, 10, 3, 10, 0.1705, 0.8090),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_newcombe_published_values(k_a, n_a, k_b, n_b, low, high):
    d = stats.unpaired_difference(k_a, n_a, k_b, n_b)
    assert d["diff"] == pytest.approx(k_a / n_a - k_b / n_b)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((low, high), abs=1e-4)


def test_unpaired_rejects_empty():
    with pytest.raises(ValueError):
        stats.unpaired_difference(0, 0, 1, 10)


# --- verdict ------------------------------------------------------------------------------------


def test_verdict_margin_and_direction():
    assert stats.verdict(0.02, 0.05, ">", margin=0.01) == stats.HOLDS
    assert stats.verdict(0.02, 0.05, ">", margin=0.03) == stats.UNDECIDED
    assert stats.verdict(0.02, 0.05, ">", margin=0.06) == stats.FAILS
    assert stats.verdict(-0.05, -0.02, "<") == stats.HOLDS
    assert stats.verdict(0.02, 0.05, "<") == stats.FAILS
    assert stats.verdict(0.0, 0.05, ">") == stats.UNDECIDED   # touching the margin is not enough
    assert stats.verdict(0.0, 0.0, ">") == stats.UNDECIDED
    with pytest.raises(ValueError):
        stats.verdict(0.0, 0.1, ">=")
    with pytest.raises(ValueError):
        stats.verdict(0.1, 0.0)


def test_hanley_mcneil_against_simulation():
    """The Hanley–McNeil sd of an empirical AUC is the spread of AUCs simulated under the exponential
    score model it derives Q1, Q2 from (within 10 %), and errs wide under the binormal one."""
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    n_pos, n_neg = 70, 430
    labels = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    for draw, wide in ((lambda: np.r_[rng.exponential(1 / 0.163, n_pos), rng.exponential(1, n_neg)], False),
                       (lambda: np.r_[rng.normal(1.5, 1, n_pos), rng.normal(0, 1, n_neg)], True)):
        aucs = [roc_auc_score(labels, draw()) for _ in range(1500)]
        hm = math.sqrt(stats.auc_variance(float(np.mean(aucs)), n_pos, n_neg))
        assert hm >= 0.95 * np.std(aucs) if wide else hm == pytest.approx(np.std(aucs), rel=0.1)
    # The figure: CCE-RM's AUC of 86 on about 70 adversarial positives, sd about 2.9 points.
    assert 100 * math.sqrt(stats.auc_variance(0.86, 70, 430)) == pytest.approx(2.9, abs=0.1)
    with pytest.raises(ValueError):
        stats.auc_variance(0.9, 0, 10)


def test_auc_claim_is_not_decided_by_seeds_that_agree_closer_than_their_data():
    """Five seeds' AUCs agree to 0.1 points just above 90, each on 60 adversarial positives: their own
    spread makes a tiny interval, the Hanley–McNeil floor one as wide as 60 positives allow."""
    aucs = [0.905, 0.906, 0.904, 0.905, 0.906]
    diffs = [a - 0.90 for a in aucs]
    bare = stats.seed_interval(diffs)
    assert stats.verdict(bare["ci_low"], bare["ci_high"], ">") == stats.HOLDS   # on agreement alone
    floor = stats.least_auc_noise([((a, 60, 440), None) for a in aucs])
    assert floor == pytest.approx(math.sqrt(stats.auc_variance(0.905, 60, 440)), rel=0.01)
    s = stats.seed_interval(diffs, min_sd=floor)
    assert stats.verdict(s["ci_low"], s["ci_high"], ">") == stats.UNDECIDED
    # A difference of two AUCs carries both sides' noise; a perfect AUC is floored one pair below 1.
    both = stats.least_auc_noise([((0.95, 60, 440), (0.90, 70, 430))])
    assert both ** 2 == pytest.approx(stats.auc_variance(0.95, 60, 440) + stats.auc_variance(0.90, 70, 430))
    assert stats.auc_floor_variance(1.0, 60, 440) > 0 == stats.auc_variance(1.0, 60, 440)


def test_observed_disagreement_floor():
    """The floor from the flags: a 1-point difference on 500 images where 10 % of them disagree is far
    noisier than the 5 disagreeing images n·|d| assumes; equal to the least floor when they are
    exactly n·|d|."""
    d, n = 0.01, 500
    least = stats.least_test_noise([(0.70, 0.69, n)])
    assert stats.observed_test_noise([(d, n, 5)]) == pytest.approx(least)
    wide = stats.observed_test_noise([(d, n, 50)])
    assert wide == pytest.approx(math.sqrt((50 / n - d * d) / n)) and wide > 3 * least
    # The case: +0.9 points a seed, about 6 % of 500 images disagreeing -> undecided.
    diffs = [0.008, 0.010, 0.009, 0.009, 0.010]
    s = stats.seed_interval(diffs, min_sd=stats.observed_test_noise([(x, 500, 30) for x in diffs]))
    assert stats.verdict(s["ci_low"], s["ci_high"], ">") == stats.UNDECIDED
