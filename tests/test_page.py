"""The results page's layout (studies.results.render): one table per set of shared runs, the scale
named under every table, the summary of the paper's main claims at the top. Hand-made plans and
rows, as in tests/test_verdicts.py: no TensorFlow, no training."""
import csv
import dataclasses
import io
import os

import pytest

from eval import stats
from studies import page, plan, results, spec
from studies.scale import SCALES

ADV_EN = spec.RunSpec("ADV-EN_2", "adv-en", 2, "cnn")
CCE_RM = spec.RunSpec("CCE-RM_2", "cce-rm", 2, "cnn")
PGD_CLAIM = spec.Claim(text="CCE-RM_2 > ADV-EN_2 under PGD", metric="pgd", a="CCE-RM_2", b="ADV-EN_2")
SEEDS = (0, 1, 2)
# What every table of the small scale says of it (studies/scale.py, Scale.caveat).
SMALL = ("Scale small (**not converged (2 epochs on 2000 images): a quick check of the pipeline, not evidence on "
         "the paper's claims**): ")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """The summary draws its forest plot under the plan's OUT_DIR ("out"): here, in a temporary folder."""
    monkeypatch.chdir(tmp_path)


def part(name, dataset, paper, runs=(ADV_EN, CCE_RM), claims=(PGD_CLAIM,), layout="attacks",
         evaluations=("attack_suite",)):
    source = name.replace("table", "Table ").replace("fig", "Figure ")
    return spec.Study(name=name, title=f"{name} on {dataset}", source=source,
                      dataset=dataset, arch="cnn", layout=layout, evaluations=evaluations, attacks=("fgsm", "pgd"),
                      runs=tuple(runs), paper=paper, claims=tuple(claims))


def make_plan(parts, scale="small"):
    """Each part's cells on the scale's data set (else its own), one run folder per settings and
    seed as studies.plan.make names them: parts with the same runs share folders."""
    s = SCALES[scale]
    study = spec.Study(name="paper", title="all", source="all", dataset="cifar10", arch="cnn", layout="attacks",
                       evaluations=(), attacks=(), runs=(), paper={}, claims=(), parts=tuple(parts))
    cells = []
    for p in parts:
        ds = s.dataset_for(p.dataset)
        cells += [plan.Cell(p.name, r, ds, seed, f"/nonexistent/{plan.run_folder(r, ds, seed)}")
                  for r in p.runs if s.keeps(r) for seed in SEEDS]
    return plan.Plan(study, s, SEEDS, "out", cells, [], [])


def rows_of(study, points, key="pgd", metric="robust_accuracy", a="CCE-RM_2", b="ADV-EN_2"):
    """Rows of runs a and b per seed, with a - b = the given points."""
    return [dict(study=study, key=key, cell=label, seed=seed, value=v, n=500, metric=metric)
            for seed, x in enumerate(points) for label, v in ((a, 0.5 + x / 100), (b, 0.5))]


T4_PAPER = {"pgd": {"ADV-EN_2": 39.7, "CCE-RM_2": 44.7}}
T5_PAPER = {"pgd": {"ADV-EN_2": 29.7, "CCE-RM_2": 35.3}}


def test_parts_that_share_runs_show_one_table_with_both_papers_numbers():
    """At the small scale Tables 4 and 5 both run on Fashion-MNIST: the same runs, one table."""
    t4, t5 = part("table4", "cifar10", T4_PAPER), part("table5", "cifar100", T5_PAPER)
    p = make_plan([t4, t5])
    assert results.shared_tables(p) == {"table4": (t4, t5), "table5": (t4, t5)}
    rows = [r for name in ("table4", "table5") for r in rows_of(name, [3.0, 3.5, 2.5])]
    md, table_csv = page.render(p, rows)

    assert md.count("| | ADV-EN_2 | CCE-RM_2 |") == 1
    assert ("| PGD (n = 500) | 50.0 ± 0.0 (CIFAR-10: 39.7; CIFAR-100: 29.7) "
            "| 53.0 ± 0.5 (CIFAR-10: 44.7; CIFAR-100: 35.3) |") in md
    # The heading says what ran, then what it stands for.
    assert ("## Fashion-MNIST, CNN (the paper's Tables 4 and 5 on CIFAR-10 and CIFAR-100): table4 on cifar10; "
            "table5 on cifar100") in md
    assert ("Source: Tables 4 and 5, one table: at this scale their cells are the same training runs. " + SMALL
            + "runs on Fashion-MNIST, not the paper's CIFAR-10 (Table 4) and CIFAR-100 (Table 5); seeds 0, 1, 2;") in md
    assert "in brackets the paper's value of each, labelled CIFAR-10 and CIFAR-100." in md
    # Table 5's own section says where its table is and keeps its claims, counted once.
    assert ("## Fashion-MNIST, CNN (the paper's Table 5 on CIFAR-100): table5 on cifar100\n\nSource: Table 5. "
            + SMALL + "shown in Table 4's table above (the same runs), the paper's values labelled CIFAR-100.") in md
    # Each claim row names its two sides first.
    assert md.count("| CCE-RM_2 − ADV-EN_2, PGD | CCE-RM_2 > ADV-EN_2 under PGD |") == 2
    # How to read a claims table is said once.
    assert md.count("Claims (differences in percentage points") == 1 and "Claims (read as above):" in md
    assert "same claim as Table 4's: **holds**" in md
    # The CSV is data: one block per part, each with its own paper number.
    by_part = {(r[0], r[2]): r[8] for r in csv.reader(io.StringIO(table_csv)) if r[1] == "pgd"}
    assert by_part[("table4", "CCE-RM_2")] == "0.447" and by_part[("table5", "CCE-RM_2")] == "0.353"


def test_parts_with_other_runs_keep_their_own_tables():
    """At the paper scale Tables 4 and 5 train on CIFAR-10 and CIFAR-100: other run folders. A
    transferability table of the same runs is drawn another way: its own table too."""
    t4, t5 = part("table4", "cifar10", T4_PAPER), part("table5", "cifar100", T5_PAPER)
    t6 = part("table6", "cifar10", {}, claims=(), layout="transferability", evaluations=("transferability",))
    p = make_plan([t4, t5, t6], scale="paper")
    assert results.shared_tables(p) == {"table4": (t4,), "table5": (t5,), "table6": (t6,)}
    rows = rows_of("table4", [3.0, 3.5, 2.5]) + rows_of("table5", [1.0, 2.0, 3.0])
    md, _ = page.render(p, rows)
    assert md.count("| | ADV-EN_2 | CCE-RM_2 |") == 3
    assert "| PGD (n = 500) | 50.0 ± 0.0 (39.7) | 53.0 ± 0.5 (44.7) |" in md
    assert "| PGD (n = 500) | 50.0 ± 0.0 (29.7) | 52.0 ± 1.0 (35.3) |" in md
    assert "shown in" not in md and "as in" not in md   # other runs: no cell is another table's
    for source, data in (("Table 4", "CIFAR-10"), ("Table 5", "CIFAR-100"), ("Table 6", "CIFAR-10")):
        assert f"Source: {source}. Scale paper: runs on {data}; seeds 0, 1, 2;" in md
    # Which test images: the paper scale keeps the paper's first n; the standard scale draws per seed.
    assert "seeds 0, 1, 2; the first n test images, as the paper's protocol fixes them; cells:" in md
    md, _ = page.render(make_plan([t4], scale="standard"), rows)
    assert "seeds 0, 1, 2; test images drawn at random for each seed, the same for every run at that seed;" in md


def _summary_plan():
    """Table 4 (PGD and the worst case), Fig 2's detection claim and the detector-aware claim on
    CCE-DM_2 and CCE-RM_2; rows a - b per seed: PGD +3, +4, +2; worst case +1, -1, +0.5; AUC +5, +6,
    +7; detection-aware robust accuracy -17, -18, -16."""
    adp = spec.RunSpec("ADP_2", "adp", 2, "cnn")
    cce_dm = spec.RunSpec("CCE-DM_2", "cce-dm", 2, "cnn")
    worst = spec.Claim(text="CCE-RM_2 > ADV-EN_2, worst case", metric="any_attack", a="CCE-RM_2", b="ADV-EN_2")
    detects = spec.Claim(text="CCE-DM detects better", metric="auc_pgd", a="CCE-DM_2", b="CCE-RM_2")
    aware = spec.Claim(text="CCE-DM keeps more", metric="detection_aware", a="CCE-DM_2", b="CCE-RM_2")
    t4 = part("table4", "cifar10", T4_PAPER, runs=(ADV_EN, adp, CCE_RM), claims=(PGD_CLAIM, worst))
    fig2 = part("fig2", "cifar10", {}, runs=(cce_dm, CCE_RM), claims=(detects,), layout="detection",
                evaluations=("detection",))
    adaptive = part("adaptive", "fashion_mnist", {}, runs=(cce_dm, CCE_RM), claims=(aware,),
                    evaluations=("adaptive_detection",))
    rows = (rows_of("table4", [3.0, 4.0, 2.0]) + rows_of("table4", [1.0, -1.0, 0.5], key="any_attack")
            + rows_of("fig2", [5.0, 6.0, 7.0], key="auc_pgd", metric="auc", a="CCE-DM_2", b="CCE-RM_2")
            + rows_of("adaptive", [-17.0, -18.0, -16.0], key="detection_aware", a="CCE-DM_2", b="CCE-RM_2"))
    return make_plan([t4, fig2, adaptive]), rows


def test_the_summary_gives_each_main_claim_against_the_papers_and_the_strongest_attacker(monkeypatch):
    p, rows = _summary_plan()
    drawn, draw = [], page.forest.draw
    monkeypatch.setattr(page.forest, "draw", lambda lines, stem: drawn.extend(lines) or draw(lines, stem))
    md, _ = page.render(p, rows, header="HEADER")
    head = "**The paper's main claims** at scale small, seeds 0, 1, 2: "
    assert md.index("HEADER") < md.index(head) < md.index("**Claims:**")
    summary = md[md.index(head):md.index("**Claims:**")]
    # Ours: +3.0 ± t_0.975,2 × 1.0 / √3 and Holm's verdict over the page's 4 claims; the paper: 44.7 - 39.7.
    assert ("| CCE-RM_2 − ADV-EN_2, robust accuracy under PGD (Table 4) | +5.0 | +3.0 [+0.5, +5.5] **holds** "
            f"| {stats.UNDECIDED} |") in summary
    # The paper prints no AUC: that column is "–" there.
    assert ("| CCE-DM_2 − CCE-RM_2, entropy-detection AUC under PGD (Figure 2) | – | +6.0 [+3.5, +8.5] **holds** "
            f"| {stats.HOLDS} |") in summary
    # Against the strongest attacker: the worst case over every attack (per seed +1.0, -1.0, +0.5: 4
    # seeds at its sd give ±2), and the detector-aware reading of the detection claim (its interval
    # floored by the test noise of 500 images a seed).
    strong = summary[summary.index("Against the strongest attacker"):]
    assert ("| CCE-RM_2 − ADV-EN_2, robust accuracy, per-sample worst case over every attack "
            f"| +0.2 [-2.4, +2.8] **{stats.UNDECIDED}** | {stats.UNDECIDED} | 2 epochs: ±2.6: about 4 seeds") in strong
    assert ("| CCE-DM_2 − CCE-RM_2, detection-aware robust accuracy (no detector-aware attack evades at 5 % FPR) "
            f"| -17.0 [-21.2, -12.8] **{stats.FAILS}** | {stats.FAILS} | – |") in strong
    # The forest plot, drawn under the plan's OUT_DIR, its address given by the page's link.
    assert "![Forest plot of the main claims" in summary and "](out/figures/forest.png)" in summary
    assert os.path.isfile("out/figures/forest.png")
    # Each forest line says what its strongest-attacker interval measures: for detection, another quantity.
    assert drawn[-1].label == ("CCE-DM_2 − CCE-RM_2, entropy-detection AUC under PGD (Figure 2)\n"
                          "(strongest attacker: detection-aware robust accuracy)")
    # ADP_2 has no value in Table 4 here: its column is left out.
    assert "| | ADV-EN_2 | CCE-RM_2 |" in md and "| | ADV-EN_2 | ADP_2" not in md
    # Only the main claims this plan states and trains; the others are named as not measured.
    assert ("Not measured by this study (it does not state the claim or train its runs): CCE-RM_2 vs ADP_2 "
            "(robust accuracy under PGD); CCE-RM_3 vs ADV-EN_3") in summary


def test_the_summary_shows_a_longer_budget_beside_once_it_has_finished():
    p, rows = _summary_plan()
    checked = results.check_claims(p, rows)
    longer = [r for r in rows if r["key"] != "pgd"] + rows_of("table4", [1.0, 1.5, 0.5])
    own = page.Arm("2 epochs", p, checked, 1, 1)
    done = page.Arm("20 epochs", p, results.check_claims(p, longer), 8, 8)
    md = page.summary(p, checked, [own, done])
    assert "| Claim (a − b) | paper's a − b | 2 epochs | Holm | 20 epochs | Holm |" in md
    assert "+3.0 [+0.5, +5.5] **holds** | cannot be told apart at this sample size | +1.0 [-0.2, +2.2] **" in md
    running = page.Arm("20 epochs", p, {}, 3, 8)
    md = page.summary(p, checked, [own, running])
    assert "20 epochs |" not in md
    assert ("The 20 epochs budget: `python -m studies.reproduce --study paper --scale small --seeds 0,1,2 --out_dir "
            "out`: 3 of 8 jobs done; its columns appear here when it has finished.") in md


def test_no_summary_without_the_main_claims_runs():
    """Table 3's CCE-RM_2 > ADV-EN_2 runs ResNet-20 members, which the small scale does not train."""
    resnet = tuple(dataclasses.replace(r, arch="resnet20") for r in (ADV_EN, CCE_RM))
    adv1, adv_en3 = spec.RunSpec("ADV_1", "adv", 1, "cnn"), spec.RunSpec("ADV-EN_3", "adv-en", 3, "cnn")
    capacity = spec.Claim(text="ADV-EN_3 > ADV_1", metric="pgd", a="ADV-EN_3", b="ADV_1")
    p = make_plan([part("table3", "cifar10", T4_PAPER, runs=resnet),
                   part("table4", "cifar10", {}, runs=(adv1, adv_en3), claims=(capacity,))])
    rows = rows_of("table4", [3.0, 3.5, 2.5], a="ADV-EN_3", b="ADV_1")
    assert page.summary(p, results.check_claims(p, rows), []) == ""
    md, _ = page.render(p, rows)
    assert "main claims" not in md and md.startswith("**Claims:**")


def test_a_runs_worst_case_is_one_number_in_every_table_that_shows_it(tmp_path):
    """Table 4 attacks with PGD only; the adaptive study ran mul-PGD on the same weights. Both tables
    show mul-PGD and the same worst case, over every attack on file for those weights."""
    import numpy as np

    from eval import reuse
    from eval.analyses.attack_suite import plan as suite_plan, store

    run_dir = str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ensemble.weights.h5").write_bytes(b"weights of a hand-made run")
    fp = reuse.fingerprint(run_dir)
    flags = {"pgd": np.array([1, 1, 0, 1], bool), "mul_pgd": np.array([1, 0, 0, 1], bool)}
    entries, masks = {}, {}
    for name, mask in flags.items():
        params = {"eps": 0.1, "eps_iter": 0.0125, "nb_iter": 20}
        settings = suite_plan.reuse_settings(params, len(mask), 0)
        entries[name] = {"robust_accuracy": float(mask.mean()), "params": params, "n_samples": len(mask),
                         "seconds": 1.0, **reuse.stamp(settings, fp)}
        masks[name], masks[name + "__key"] = mask, np.array(store.signature(settings, fp))
    store.write_results(run_dir, {reuse.KEY: fp, "natural_accuracy": 1.0, "n_test": 4, "attacks": entries},
                        masks)
    t4 = dataclasses.replace(part("table4", "cifar10", {}), attacks=("pgd",))
    adaptive = dataclasses.replace(t4, name="adaptive", attacks=("pgd", "mul_pgd"), full_evaluation=True)
    for p in (t4, adaptive):
        rows = {r["key"]: r for r in results._cell_rows(p, plan.Cell(p.name, CCE_RM, "fashion_mnist", 0, run_dir),
                                                         p.attacks)}
        assert rows["any_attack"]["value"] == 0.5 and rows["mul_pgd"]["value"] == 0.5 and rows["pgd"]["value"] == 0.75


def _canary(tmp_path, passed: bool) -> plan.Cell:
    """A hand-made NAT_2 canary run whose suite found it keeping 30 % (or 5 %) under PGD."""
    import json
    import os

    from eval import reuse

    run_dir = tmp_path / ("canary_pass" if passed else "canary_fail")
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "ensemble.weights.h5").write_bytes(b"an undefended model")
    c = {"robust_accuracy": 0.05 if passed else 0.3, "n_samples": 500, "max_accuracy": 0.1, "passed": passed,
         "params": {"eps": 0.1, "eps_iter": 0.025, "nb_iter": 10}}
    report = {reuse.KEY: reuse.fingerprint(str(run_dir)), "attacks": {}, "sanity": {"undefended": c, "warnings": []}}
    (run_dir / "eval" / "attack_suite.json").write_text(json.dumps(report))
    return plan.Cell("canary", plan.CANARY, "fashion_mnist", 0, os.fspath(run_dir))


def test_no_robustness_verdict_from_attacks_that_fail_the_undefended_canary(tmp_path):
    p = make_plan([part("table4", "cifar10", T4_PAPER)])
    rows = rows_of("table4", [3.0, 3.5, 2.5])
    p.canaries = [_canary(tmp_path, passed=False)]
    c = results.check_claims(p, rows)["table4"][0]
    assert c["verdict"] == results.CANARY_FAILS and c["holm"] is None and c["ci_low"] is not None
    md, _ = page.render(p, rows)
    assert "**Canary fails (fashion_mnist, cnn)" in md and f"1 {results.CANARY_FAILS}" in md
    p.canaries = [_canary(tmp_path, passed=True)]
    assert results.check_claims(p, rows)["table4"][0]["verdict"] == stats.HOLDS


def _masked_run(tmp_path) -> str:
    """A hand-made run whose suite found SPSA breaking 30 of 500 images the white-box cascade left
    robust (eval/sanity.py check 9 fails)."""
    import json
    import os

    from eval import reuse

    run_dir = tmp_path / "masked"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "ensemble.weights.h5").write_bytes(b"a model that masks its gradients")
    check = {"n_samples": 500, "beyond_cascade": 30, "ci": [0.042, 0.084], "tolerance": 0.01, "passed": False}
    report = {reuse.KEY: reuse.fingerprint(str(run_dir)), "attacks": {},
              "sanity": {"beyond_cascade": {"spsa": check}, "warnings": ["masking: spsa breaks 30 of 500 images"]}}
    (run_dir / "eval" / "attack_suite.json").write_text(json.dumps(report))
    return os.fspath(run_dir)


def test_nothing_is_shown_twice_and_a_masked_run_is_flagged_above_every_table(tmp_path):
    """The adaptive table shows Table 4's runs again beside CCE-DM_2: their cells read "as in Table
    4", a row with none of its own is left out; the masked run's flag tops both tables, its sanity
    bullet is said once."""
    cce_dm = spec.RunSpec("CCE-DM_2", "cce-dm", 2, "cnn")
    t4 = part("table4", "cifar10", {}, claims=())
    adaptive = dataclasses.replace(part("adaptive", "fashion_mnist", {}, runs=(ADV_EN, CCE_RM, cce_dm), claims=()),
                                   attacks=("pgd",), full_evaluation=True)
    p = make_plan([t4, adaptive])
    masked = _masked_run(tmp_path)
    p.cells = [dataclasses.replace(c, run_dir=masked) if (c.run.label, c.seed) == ("CCE-RM_2", 0) else c
               for c in p.cells]
    rows = [dict(study=study, key=key, cell=label, seed=seed, value=0.5 + seed / 100, n=500,
                 metric="robust_accuracy", weights_sha256=f"{label}-{seed}")
            for study, labels in (("table4", ("ADV-EN_2", "CCE-RM_2")), ("adaptive", ("ADV-EN_2", "CCE-RM_2", "CCE-DM_2")))
            for key in ("fgsm", "pgd") for label in labels for seed in SEEDS if study == "table4" or key == "pgd"]
    md, _ = page.render(p, rows)
    adaptive_md = md[md.index("## Fashion-MNIST, CNN (the paper's adaptive"):]
    assert "| PGD (n = 500) | as in Table 4 | as in Table 4 | 51.0 ± 1.0 |" in adaptive_md
    assert "FGSM" in md and "FGSM" not in adaptive_md
    flag = ("**CCE-RM_2, seed 0: spsa breaks 30 of 500 images the white-box cascade left robust (95 % interval "
            "from 4.2 %, above 1 %): gradient masking is likely, so its worst case (the any-attack row) is untrustworthy.**")
    assert md.count(flag) == 2 and adaptive_md.index(flag) < adaptive_md.index("| | ADV-EN_2")
    assert md.count("- CCE-RM_2, seed 0: **masking: spsa breaks 30 of 500 images**") == 1


def test_to_decide_says_how_many_seeds_or_images_would_narrow_a_worst_case_to_two_points():
    base = dict(scale=100.0, seeds=[0, 1, 2, 3, 4], n_images=1000)
    # Seeds that agree (sd 0.005 of their own) under image noise 0.03 a seed: images decide it.
    noisy = dict(base, per_seed=[0.01, 0.02, 0.015, 0.01, 0.02], noise=0.03, sd=0.03)
    noisy.update(ci_low=0.015 - stats.t_half_width(0.03, 5), ci_high=0.015 + stats.t_half_width(0.03, 5))
    said = page.to_decide(noisy)
    assert said.startswith("±3.7: about 12 seeds or ") and "test images a seed on these 5 seeds" in said
    images = int(said.split(" or ")[1].split(" ")[0].replace(",", ""))
    # With that many images the noise falls as 1/√n and the half-width reaches 2 points.
    assert stats.t_half_width(max(0.03 * (1000 / images) ** 0.5, 0.005), 5) <= 0.0201
    # Seeds that disagree more than 2 points allow: no number of images decides it.
    spread = dict(base, per_seed=[0.05, -0.04, 0.03, -0.05, 0.01], noise=0.01, sd=0.042, ci_low=-0.05, ci_high=0.05)
    assert "no number of test images on 5 seeds" in page.to_decide(spread)
    assert page.to_decide(dict(spread, ci_low=0.001, ci_high=0.03, verdict=stats.HOLDS)) == ""
    # Narrow but with no verdict: it says which differences it rules out, not that it needs more data.
    assert page.to_decide(dict(spread, ci_low=-0.003, ci_high=0.009, verdict=stats.UNDECIDED)) == (
        "decided (±0.6): a difference outside [-0.3, +0.9] is ruled out")


def test_the_sweep_point_at_pgds_own_eps_is_not_a_second_row():
    """Fig 4's sweep at ε = 0.1 is the attack of the "AUC, PGD" row: one number, one row."""
    fig2 = part("fig2", "cifar10", {}, claims=(), layout="detection", evaluations=("detection",))
    rows = [dict(study="fig2", key=key, cell=label, seed=seed, value=v, n=500, metric="auc", eps=eps)
            for key, eps, v in (("auc_pgd", 0.1, 0.86), ("auc_sweep3", 0.1, 0.86), ("auc_sweep0", 0.0125, 0.9))
            for label in ("ADV-EN_2", "CCE-RM_2") for seed in SEEDS]
    md, _ = page.render(make_plan([fig2]), rows)
    assert "| AUC, PGD (ε = 0.1; n = 500) | 86.0 ± 0.0 | 86.0 ± 0.0 |" in md
    assert "sweep point 1 (ε = 0.0125" in md and "sweep point 4" not in md
