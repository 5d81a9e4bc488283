"""The results page's layout (studies.results.render): one table per set of shared runs, the scale
named under every table, the summary of the paper's main claims at the top. Hand-made plans and
rows, as in tests/test_verdicts.py: no TensorFlow, no training."""
import csv
import dataclasses
import io

from eval import stats
from studies import plan, results, spec
from studies.scale import SCALES

ADV_EN = spec.RunSpec("ADV-EN_2", "adv-en", 2, "cnn")
CCE_RM = spec.RunSpec("CCE-RM_2", "cce-rm", 2, "cnn")
PGD_CLAIM = spec.Claim(text="CCE-RM_2 > ADV-EN_2 under PGD", metric="pgd", a="CCE-RM_2", b="ADV-EN_2")
SEEDS = (0, 1, 2)
# What every table of the small scale says of it (studies/scale.py, Scale.caveat).
SMALL = ("Scale small (**not converged (2 epochs on 2000 images): a quick check of the pipeline, not evidence on "
         "the paper's claims**): ")


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
    return plan.Plan(study, s, SEEDS, "unused", cells, [], [])


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
    md, table_csv = results.render(p, rows)

    assert md.count("| | ADV-EN_2 | CCE-RM_2 |") == 1
    assert ("| PGD | 50.0 ± 0.0 (CIFAR-10: 39.7; CIFAR-100: 29.7) "
            "| 53.0 ± 0.5 (CIFAR-10: 44.7; CIFAR-100: 35.3) |") in md
    assert "## Tables 4 and 5: table4 on cifar10; table5 on cifar100" in md
    assert ("Source: Tables 4 and 5, one table: at this scale their cells are the same training runs. " + SMALL
            + "runs on Fashion-MNIST, not the paper's CIFAR-10 (Table 4) and CIFAR-100 (Table 5); seeds 0, 1, 2;") in md
    assert "in brackets the paper's value of each, labelled CIFAR-10 and CIFAR-100." in md
    # Table 5's own section says where its table is and keeps its claims, counted once.
    assert ("## table5 on cifar100\n\nSource: Table 5. " + SMALL + "shown with Table 4 above (same runs), "
            "the paper's values labelled CIFAR-100.") in md
    assert md.count("| CCE-RM_2 > ADV-EN_2 under PGD |") == 2 and "same claim as Table 4's: **holds**" in md
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
    md, _ = results.render(p, rows)
    assert md.count("| | ADV-EN_2 | CCE-RM_2 |") == 3
    assert "| PGD | 50.0 ± 0.0 (39.7) | 53.0 ± 0.5 (44.7) |" in md
    assert "| PGD | 50.0 ± 0.0 (29.7) | 52.0 ± 1.0 (35.3) |" in md
    assert "shown with" not in md
    for source, data in (("Table 4", "CIFAR-10"), ("Table 5", "CIFAR-100"), ("Table 6", "CIFAR-10")):
        assert f"Source: {source}. Scale paper: runs on {data}; seeds 0, 1, 2;" in md


def test_the_summary_gives_each_main_claim_with_its_worst_case_and_the_papers_difference():
    adp = spec.RunSpec("ADP_2", "adp", 2, "cnn")
    cce_dm = spec.RunSpec("CCE-DM_2", "cce-dm", 2, "cnn")
    detects = spec.Claim(text="CCE-DM detects better", metric="auc_pgd", a="CCE-DM_2", b="CCE-RM_2")
    t4 = part("table4", "cifar10", T4_PAPER, runs=(ADV_EN, adp, CCE_RM))
    fig2 = part("fig2", "cifar10", {}, runs=(cce_dm, CCE_RM), claims=(detects,), layout="detection",
                evaluations=("detection",))
    p = make_plan([t4, fig2])
    rows = (rows_of("table4", [3.0, 4.0, 2.0]) + rows_of("table4", [1.0, -1.0, 0.5], key="any_attack")
            + rows_of("fig2", [5.0, 6.0, 7.0], key="auc_pgd", metric="auc", a="CCE-DM_2", b="CCE-RM_2"))
    md, _ = results.render(p, rows, header="HEADER")
    head = "**The paper's main claims** at scale small, seeds 0, 1, 2: "
    assert md.index("HEADER") < md.index(head) < md.index("**Claims:**")
    # Ours: +3.0 ± t_0.975,2 × 1.0 / √3; the worst case: per seed +1.0, -1.0, +0.5; the paper: 44.7 - 39.7.
    assert ("| CCE-RM_2 > ADV-EN_2 under PGD (Table 4) | +3.0 [+0.5, +5.5] **holds** "
            f"| +0.2 [-2.4, +2.8] **{stats.UNDECIDED}** | +5.0 |") in md
    # A claim that is not on an attack's accuracy has no worst case; the paper prints no AUC.
    assert ("| CCE-DM_2 > CCE-RM_2 in entropy-detection AUC under PGD (Figure 2) | +6.0 [+3.5, +8.5] **holds** "
            "| – | – |") in md
    # Only the main claims this plan states and trains: no CCE-RM_2 > ADP_2 claim, no N = 3 runs.
    summary = results.summary(p, rows, results.check_claims(p, rows)).splitlines()
    assert [line.split(" (")[0] for line in summary[4:6]] == [
        "| CCE-RM_2 > ADV-EN_2 under PGD", "| CCE-DM_2 > CCE-RM_2 in entropy-detection AUC under PGD"]
    # The others are named as not measured, so that the table is not read as the whole list.
    assert summary[6:] == ["", "Not measured by this study (it does not state the claim or train its runs): "
                           "CCE-RM_2 vs ADP_2 under PGD; CCE-RM_3 vs ADV-EN_3 under PGD; CCE-RM_3 vs ADP_3 "
                           "under PGD; CCE-RM_3 vs CCE-RM_2 under PGD; CCE-RM_2 vs ADV-EN_2 in transferability "
                           "T; CCE-RM_2 vs ADP_2 in transferability T; CCE-DM_2 vs 90 in entropy-detection "
                           "AUC under PGD."]


def test_no_summary_without_the_main_claims_runs():
    """Table 3's CCE-RM_2 > ADV-EN_2 runs ResNet-20 members, which the small scale does not train."""
    resnet = tuple(dataclasses.replace(r, arch="resnet20") for r in (ADV_EN, CCE_RM))
    adv1, adv_en3 = spec.RunSpec("ADV_1", "adv", 1, "cnn"), spec.RunSpec("ADV-EN_3", "adv-en", 3, "cnn")
    capacity = spec.Claim(text="ADV-EN_3 > ADV_1", metric="pgd", a="ADV-EN_3", b="ADV_1")
    p = make_plan([part("table3", "cifar10", T4_PAPER, runs=resnet),
                   part("table4", "cifar10", {}, runs=(adv1, adv_en3), claims=(capacity,))])
    rows = rows_of("table4", [3.0, 3.5, 2.5], a="ADV-EN_3", b="ADV_1")
    assert results.summary(p, rows, results.check_claims(p, rows)) == ""
    md, _ = results.render(p, rows)
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
    md, _ = results.render(p, rows)
    assert "**Canary fails (fashion_mnist, cnn)" in md and f"1 {results.CANARY_FAILS}" in md
    p.canaries = [_canary(tmp_path, passed=True)]
    assert results.check_claims(p, rows)["table4"][0]["verdict"] == stats.HOLDS
