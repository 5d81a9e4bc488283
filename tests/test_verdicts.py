"""Claim verdicts with the seed as the unit (DESIGN.md, contract 11): eval.stats.seed_interval and
holm, and studies.results.check_claims / render / resolution on hand-made plans and rows. Pure
numpy and scipy: no TensorFlow, no training."""
import dataclasses

import numpy as np
import pytest
from scipy import stats as sps

from eval import stats
from studies import page, plan, results, spec
from studies.scale import SCALES

ADV_EN = spec.RunSpec("ADV-EN_2", "adv-en", 2, "cnn")
CCE_RM = spec.RunSpec("CCE-RM_2", "cce-rm", 2, "cnn")
PGD_CLAIM = spec.Claim(text="CCE-RM_2 > ADV-EN_2 under PGD", metric="pgd", a="CCE-RM_2", b="ADV-EN_2")


def part(name, claims=(PGD_CLAIM,), runs=(ADV_EN, CCE_RM), dataset="cifar10", claims_by="paper", paper=None):
    return spec.Study(name=name, title=name, source=name.replace("table", "Table "), dataset=dataset, arch="cnn",
                      layout="attacks", evaluations=("attack_suite",), attacks=("fgsm", "pgd"), runs=tuple(runs),
                      paper=paper or {}, claims=tuple(claims), claims_by=claims_by)


def make_plan(parts, seeds, with_cells=False):
    study = parts[0] if len(parts) == 1 else spec.Study(
        name="paper", title="all", source="all", dataset="cifar10", arch="cnn", layout="attacks", evaluations=(),
        attacks=(), runs=(), paper={}, claims=(), parts=tuple(parts))
    scale = SCALES["small"]
    cells = [plan.Cell(p.name, r, "fashion_mnist", s, f"/nonexistent/{r.label}_s{s}")
             for p in parts for r in p.runs if scale.keeps(r) for s in seeds] if with_cells else []
    return plan.Plan(study, scale, tuple(seeds), "unused", cells, [], [])


def flags(n, right):
    """Per-sample flags of n test samples, ``right`` of them robust."""
    return np.arange(n) < right


def row(study, label, seed, mask, key="pgd"):
    return dict(study=study, key=key, cell=label, seed=seed, value=float(mask.mean()), n=mask.size,
                metric="robust_accuracy")


def rows_from_flags(study, per_seed_right, n, key="pgd"):
    """Rows of CCE-RM_2 (a) and ADV-EN_2 (b) from per-sample flags, per seed (right_a, right_b)."""
    out = []
    for seed, (right_a, right_b) in enumerate(per_seed_right):
        out += [row(study, "CCE-RM_2", seed, flags(n, right_a), key),
                row(study, "ADV-EN_2", seed, flags(n, right_b), key)]
    return out


def rows_from_diffs(study, per_seed_points):
    """Rows with CCE-RM_2 - ADV-EN_2 = the given points per seed, for each key."""
    out = []
    for key, points in per_seed_points.items():
        for seed, x in enumerate(points):
            out += [dict(study=study, key=key, cell=label, seed=seed, value=v, n=500, metric="robust_accuracy")
                    for label, v in (("CCE-RM_2", 0.5 + x / 100), ("ADV-EN_2", 0.5))]
    return out


# --- eval.stats ---------------------------------------------------------------------------------


def test_seed_interval_is_the_paired_t_interval_over_seeds():
    d = [-0.006, 0.028, 0.028]   # the page's example: pooled over samples it read "holds [+0.3, +3.0]"
    s = stats.seed_interval(d)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(sps.t.interval(0.95, 2, np.mean(d), sps.sem(d)))
    assert (round(100 * s["ci_low"], 1), round(100 * s["ci_high"], 1)) == (-3.2, 6.5)
    assert s["p"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert stats.seed_interval(d, margin=0.01)["p"] == pytest.approx(sps.ttest_1samp(d, 0.01).pvalue)
    assert (s["n_seeds"], s["sd"]) == (3, pytest.approx(np.std(d, ddof=1)))
    assert stats.verdict(s["ci_low"], s["ci_high"]) == stats.UNDECIDED


def test_seed_interval_edges():
    one = stats.seed_interval([0.03])
    assert one == {"diff": 0.03, "ci_low": None, "ci_high": None, "p": None, "sd": None, "n_seeds": 1}
    same = stats.seed_interval([0.03, 0.03, 0.03])
    assert (same["ci_low"], same["ci_high"], same["p"]) == (0.03, 0.03, 0.0)
    assert stats.seed_interval([0.03, 0.03], margin=0.03)["p"] == 1.0
    assert np.isnan(stats.t_half_width(0.01, 1))
    assert stats.t_half_width(0.01, 5) == pytest.approx(2.776445 * 0.01 / np.sqrt(5))
    with pytest.raises(ValueError):
        stats.seed_interval([])


def test_holm_hand_worked():
    # m = 4, sorted 0.005 <= .05/4, 0.01 <= .05/3, then 0.03 > .05/2: stop; 0.04 is kept though < .05.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    # m = 3: 0.01 <= .05/3, 0.02 <= .05/2, 0.03 <= .05/1: all rejected (Bonferroni would keep two).
    assert stats.holm([0.03, 0.01, 0.02]) == [True, True, True]
    assert stats.holm([0.2, 0.001], alpha=0.01) == [False, True]
    assert stats.holm([]) == []
    with pytest.raises(ValueError):
        stats.holm([0.5, 1.2])


def test_significance_verdict():
    assert stats.significance_verdict(0.02, True, ">") == stats.HOLDS
    assert stats.significance_verdict(-0.02, True, ">") == stats.FAILS
    assert stats.significance_verdict(-0.02, True, "<") == stats.HOLDS
    assert stats.significance_verdict(0.02, True, ">", margin=0.03) == stats.FAILS
    assert stats.significance_verdict(0.02, False, ">") == stats.UNDECIDED
    with pytest.raises(ValueError):
        stats.significance_verdict(0.02, True, ">=")


# --- check_claim: what the page uses -------------------------------------------------------------


def test_seeds_that_disagree_do_not_make_a_claim_hold():
    """+5, -5, +5 points on 10,000 samples per seed: pooled as samples it "holds"; over seeds it cannot."""
    t4 = part("table4")
    right = [(5500, 5000), (5000, 5500), (5500, 5000)]
    rows = rows_from_flags("table4", right, 10000)
    c = results.check_claim(make_plan([t4], (0, 1, 2)), t4, PGD_CLAIM, rows)
    assert c["per_seed"] == pytest.approx([0.05, -0.05, 0.05])
    assert c["verdict"] != stats.HOLDS and c["verdict"] == stats.UNDECIDED
    assert c["method"] == "t interval over 3 seeds"
    assert c["ci_low"] < 0 < c["ci_high"]
    pooled = stats.combine_seeds([stats.paired_difference(flags(10000, a), flags(10000, b)) for a, b in right])
    assert stats.verdict(pooled["ci_low"], pooled["ci_high"]) == stats.HOLDS  # the old rule's answer


def test_seeds_that_agree_make_a_claim_hold():
    """Every seed +3 points on 500 samples."""
    t4 = part("table4")
    rows = rows_from_flags("table4", [(215, 200), (195, 180), (235, 220)], 500)
    c = results.check_claim(make_plan([t4], (0, 1, 2)), t4, PGD_CLAIM, rows)
    assert c["per_seed"] == pytest.approx([0.03, 0.03, 0.03])
    assert c["verdict"] == stats.HOLDS
    # sd 0 over seeds, floored by the test noise of 15 images that only a gets right out of 500
    assert c["diff"] == pytest.approx(0.03) and c["sd"] == pytest.approx(np.sqrt(0.03 * 0.97 / 500))
    assert c["ci_high"] - c["ci_low"] == pytest.approx(2 * stats.t_half_width(c["sd"], 3)) and c["p"] < 0.05


def test_seeds_that_agree_on_one_image_do_not_make_a_claim_hold():
    """+0.4, +0.4 points on 250 images (one image each): sd 0 over the two seeds, but each difference
    carries at least the test noise of one image, and a one-image difference is no finding."""
    t4 = part("table4")
    rows = rows_from_flags("table4", [(176, 175), (171, 170)], 250)
    c = results.check_claim(make_plan([t4], (0, 1)), t4, PGD_CLAIM, rows)
    assert c["per_seed"] == pytest.approx([0.004, 0.004]) and c["sd"] == pytest.approx(np.sqrt(0.004 * 0.996 / 250))
    assert c["verdict"] == stats.UNDECIDED and c["ci_low"] < 0 < c["ci_high"]


def test_least_test_noise_hand_worked():
    # paired: the fewest images on which a and b can differ is n|d|: var ((|d| - d^2))/n, mean over seeds
    assert stats.least_test_noise([(0.70, 0.65, 500)]) == pytest.approx(np.sqrt((0.05 - 0.0025) / 500))
    assert stats.least_test_noise([(0.5, 0.5, 100), (0.6, 0.5, 100)]) == pytest.approx(np.sqrt(0.09 / 100 / 2))
    # against a threshold: the binomial variance of a alone
    assert stats.least_test_noise([(0.9, None, 400)]) == pytest.approx(np.sqrt(0.09 / 400))
    wide = stats.seed_interval([0.004, 0.004], min_sd=0.004)
    assert wide["sd"] == 0.004 and wide["ci_low"] == pytest.approx(0.004 - stats.t_half_width(0.004, 2))
    assert stats.seed_interval([0.05, 0.03, 0.04], min_sd=0.001) == stats.seed_interval([0.05, 0.03, 0.04])


def test_one_seed_gives_no_interval():
    t4 = part("table4")
    c = results.check_claim(make_plan([t4], (0,)), t4, PGD_CLAIM, rows_from_flags("table4", [(300, 200)], 500))
    assert c["verdict"] == stats.UNDECIDED and c["ci_low"] is None and c["p"] is None
    assert c["method"] == "one seed: no seed-level interval"


def test_only_the_plans_seeds_count():
    t4 = part("table4")
    rows = rows_from_flags("table4", [(215, 200), (195, 180), (100, 300)], 500)
    assert results.check_claim(make_plan([t4], (0, 1)), t4, PGD_CLAIM, rows)["seeds"] == [0, 1]


def test_paper_difference_and_size():
    sized = spec.Claim(text="a gap of 7%~8%", metric="pgd", a="CCE-RM_2", b="ADV-EN_2", size=(7.0, 8.0))
    far = spec.Claim(text="a gap of 20%~30%", metric="pgd", a="CCE-RM_2", b="ADV-EN_2", size=(20.0, 30.0))
    t4 = part("table4", claims=(sized, far, PGD_CLAIM), paper={"pgd": {"CCE-RM_2": 44.7, "ADV-EN_2": 39.7}})
    rows = rows_from_flags("table4", [(5500, 5000), (5000, 5500), (5500, 5000)], 10000)  # [-12.7, +16.0]
    p = make_plan([t4], (0, 1, 2))
    assert [results.check_claim(p, t4, c, rows)["size_in_interval"] for c in t4.claims] == ["yes", "no", "–"]
    assert results.check_claim(p, t4, sized, rows)["paper_diff"] == pytest.approx(5.0)
    table = results.claims_table(results.check_claims(p, rows)["table4"][:1])
    assert "| +5.0 | yes (7 to 8) |" in table and "t interval over 3 seeds" in table


# --- distinct claims, the family-wise view, the page ---------------------------------------------


def test_holm_view_over_the_distinct_claims():
    """Three claims: p tiny, p = 0.029 (holds alone, not after Holm over three), p large."""
    claims = [spec.Claim(text=k, metric=k, a="CCE-RM_2", b="ADV-EN_2") for k in ("pgd", "fgsm", "natural")]
    t4 = part("table4", claims=claims)
    diffs = {"pgd": [5.0, 5.1, 4.9], "fgsm": [1.4, 2.0, 2.6], "natural": [1.0, -2.0, 2.0]}
    assert 0.025 < sps.ttest_1samp(diffs["fgsm"], 0).pvalue < 0.05
    rows = rows_from_diffs("table4", diffs)
    checked = results.check_claims(make_plan([t4], (0, 1, 2)), rows)["table4"]
    assert [c["verdict"] for c in checked] == [stats.HOLDS, stats.HOLDS, stats.UNDECIDED]
    assert [c["holm"] for c in checked] == [stats.HOLDS, stats.UNDECIDED, stats.UNDECIDED]
    assert "2 hold (1 after Holm's adjustment)" in results.claims_summary({"table4": checked})


def test_shared_runs_give_one_claim_and_every_claim_is_counted(tmp_path, monkeypatch):
    """Tables 4 and 5 train the same runs at the small scale: one claim. Table 3's ResNet-20 runs are
    not trained there: its claim counts as not measured at this scale. A package claim counts apart."""
    resnet = tuple(dataclasses.replace(r, arch="resnet20") for r in (ADV_EN, CCE_RM))
    detects = spec.Claim(text="AUC above 90", metric="pgd", a="CCE-RM_2", b=90.0)
    parts = [part("table3", runs=resnet), part("table4"), part("table5", dataset="cifar100"),
             part("adaptive", claims=(detects,), dataset="fashion_mnist", claims_by="package")]
    right = [(215, 200), (195, 180), (235, 220)]
    rows = [r for p in ("table4", "table5", "adaptive") for r in rows_from_flags(p, right, 500)]
    p = make_plan(parts, (0, 1, 2), with_cells=True)
    checked = results.check_claims(p, rows)
    t3, t4, t5, ad = (checked[n][0] for n in ("table3", "table4", "table5", "adaptive"))
    assert t3["verdict"] == results.NOT_AT_SCALE and "resnet20" in t3["method"] and t3["holm"] is None
    assert t4["same_as"] is None and t4["verdict"] == stats.HOLDS == t4["holm"]
    assert t5["same_as"] == "Table 4" and (t5["verdict"], t5["holm"]) == (stats.HOLDS, stats.HOLDS)
    assert ad["by"] == "package" and ad["verdict"] == stats.FAILS   # 43 % robust is no AUC above 90
    assert results.claim_identity(p, parts[1], PGD_CLAIM) == results.claim_identity(p, parts[2], PGD_CLAIM)
    assert results.claim_identity(p, parts[0], PGD_CLAIM) != results.claim_identity(p, parts[1], PGD_CLAIM)

    monkeypatch.chdir(tmp_path)   # the summary's forest plot goes under the plan's OUT_DIR
    md, _ = page.render(p, rows)
    assert "**Claims:** 3 distinct (4 in the studies' files, 1 of them repeating" in md
    assert ("- the paper's 2: 1 hold (1 after Holm's adjustment), 0 do not hold (0 after Holm's adjustment), "
            f"0 {stats.UNDECIDED}, 1 not measured at this scale.") in md
    assert "- this package's 1: 0 hold (0 after Holm's adjustment), 1 do not hold (1 after" in md
    assert "over the 2 distinct claims of this page measured on two seeds or more" in md
    assert md.count("trained at the paper scale only") == 1
    assert "so scale small does not reproduce Table 3;" in md
    assert "same claim as Table 4's: **holds**" in md


def test_any_attack_claims_on_the_same_runs_are_one_whatever_the_part():
    # A run's worst case is over every attack on file for its weights, whichever table shows it.
    worst = spec.Claim(text="worst case", metric="any_attack", a="CCE-RM_2", b="ADV-EN_2")
    t4 = part("table4", claims=(worst,))
    full = dataclasses.replace(t4, name="adaptive", attacks=("pgd", "mul_pgd"), full_evaluation=True)
    p = make_plan([t4, full], (0, 1, 2))
    assert results.claim_identity(p, t4, worst) == results.claim_identity(p, full, worst)


# --- the dry run --------------------------------------------------------------------------------


def test_resolution_from_the_seed_spread_so_far():
    claims = [spec.Claim(text=k, metric=k, a="CCE-RM_2", b="ADV-EN_2") for k in ("pgd", "fgsm", "natural")]
    t4 = part("table4", claims=claims)
    # per-seed sds 1.41, 0.35, 2.83 points: median 1.41
    rows = rows_from_diffs("table4", {"pgd": [1.0, 3.0], "fgsm": [2.0, 2.5], "natural": [0.0, 4.0]})
    lines = results.resolution(make_plan([t4], (0, 1, 2, 3, 4)), rows)
    half = sps.t.ppf(0.975, 4) * np.sqrt(2) / np.sqrt(5)
    assert lines[0] == "claims: 3 distinct, each checked on the plan's 5 seeds (t interval over seeds)"
    assert f"±{half:.1f} points (t_0.975,4 × 1.4 / √5" in lines[1]
    assert "of the 3 claims measured so far" in lines[1]
    unknown = results.resolution(make_plan([t4], (0, 1, 2)), [])
    assert "unknown until two seeds of a claim are measured" in unknown[1]
    assert "one seed gives no seed-level interval" in results.resolution(make_plan([t4], (0,)), [])[0]


def test_the_dry_run_counts_the_claims_the_scale_cannot_measure():
    # The small scale runs no SPSA: a claim on it is counted, and said to be out of the scale's reach.
    t4 = dataclasses.replace(part("table4", claims=[spec.Claim(text=k, metric=k, a="CCE-RM_2", b="ADV-EN_2")
                                                    for k in ("pgd", "spsa")]), attacks=("pgd", "spsa"))
    lines = results.resolution(make_plan([t4], (0, 1, 2)), [])
    assert lines[0].startswith("claims: 2 distinct")
    assert lines[2] == "  not measured at scale small: 1 of 2 (scale small does not run spsa)"


def test_an_auc_claim_is_floored_by_its_positives():
    """Five seeds' AUCs agree to 0.1 points at 90.5 against a threshold of 90, each on 60 adversarial
    positives among 500: the seeds' own spread would call it, the Hanley–McNeil floor does not."""
    claim = spec.Claim(text="CCE-DM_2 AUC above 90", metric="auc_pgd", a="CCE-RM_2", b=90.0)
    p = part("fig2", claims=(claim,))
    aucs = [0.905, 0.906, 0.904, 0.905, 0.906]
    rows = [dict(study="fig2", key="auc_pgd", cell="CCE-RM_2", seed=s, value=v, n=500, n_pos=60, metric="auc")
            for s, v in enumerate(aucs)]
    c = results.check_claim(make_plan([p], range(5)), p, claim, rows)
    assert c["verdict"] == stats.UNDECIDED
    assert c["sd"] == pytest.approx(np.sqrt(stats.auc_variance(0.905, 60, 440)), rel=0.01)
    many = [dict(r, n=20000, n_pos=10000) for r in rows]   # the same AUCs on 10,000 positives: decided
    assert results.check_claim(make_plan([p], range(5)), p, claim, many)["verdict"] == stats.HOLDS


def test_an_accuracy_claim_is_floored_by_the_observed_disagreement(monkeypatch):
    """CCE-RM_2 one point above ADV-EN_2 at every seed on 500 images: where the flags show only those
    5 images disagree the claim holds; where 65 disagree (35 and 30 each way), it cannot be told apart."""
    p = part("table4")
    rows = rows_from_flags("table4", [(305, 300)] * 5, 500)
    pl = make_plan([p], range(5), with_cells=True)
    assert results.check_claim(pl, p, PGD_CLAIM, rows)["verdict"] == stats.HOLDS   # no flags: n·|d|
    a = np.arange(500) < 305
    b = a.copy()
    b[:35], b[305:335] = False, True                      # 35 only CCE-RM_2 gets right, 30 only ADV-EN_2
    assert a.sum() - b.sum() == 5 and np.sum(a != b) == 65
    monkeypatch.setattr(results, "_flags", lambda plan_, part_, label, seed, key: a if label == "CCE-RM_2" else b)
    c = results.check_claim(pl, p, PGD_CLAIM, rows)
    assert c["verdict"] == stats.UNDECIDED
    assert c["sd"] == pytest.approx(stats.observed_test_noise([(0.01, 500, 65)]))


def test_the_page_hooks_of_every_analysis_are_functions():
    """studies.results finds an analysis's optional hooks by name: a module that imports something of
    that name (absl's ``flags``) must not pass for one."""
    from eval.analyses import ANALYSES
    for a in ANALYSES.values():
        for hook in ("sample_flags", "check_lines", "sanity"):
            assert not hasattr(a, hook) or callable(getattr(a, hook)), (a.NAME, hook)
    assert callable(ANALYSES["attack_suite"].sample_flags) and callable(ANALYSES["adaptive_detection"].check_lines)
