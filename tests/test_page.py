"""The results page's layout (studies.results.render): one table per set of shared runs, the scale
named under every table, the summary of the paper's main claims at the top. Hand-made plans and
rows, as in tests/test_verdicts.py: no TensorFlow, no training."""
import csv
import io

from eval import stats
from studies import plan, results, spec
from studies.scale import SCALES

ADV_EN = spec.RunSpec("ADV-EN_2", "adv-en", 2, "cnn")
CCE_RM = spec.RunSpec("CCE-RM_2", "cce-rm", 2, "cnn")
PGD_CLAIM = spec.Claim(text="CCE-RM_2 > ADV-EN_2 under PGD", metric="pgd", a="CCE-RM_2", b="ADV-EN_2")
SEEDS = (0, 1, 2)


def part(name, dataset, paper, runs=(ADV_EN, CCE_RM), claims=(PGD_CLAIM,), layout="attacks",
         evaluations=("attack_suite",)):
    return spec.Study(name=name, title=f"{name} on {dataset}", source=name.replace("table", "Table "),
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
    assert "| PGD | 50.0 ± 0.0 (CIFAR-10: 39.7; CIFAR-100: 29.7) | 53.0 ± 0.5 (CIFAR-10: 44.7; CIFAR-100: 35.3) |" in md
    assert "## Tables 4 and 5: table4 on cifar10; table5 on cifar100" in md
    assert ("Source: Tables 4 and 5, one table: at this scale their cells are the same training runs. Scale small: "
            "runs on Fashion-MNIST, not the paper's CIFAR-10 (Table 4) and CIFAR-100 (Table 5); seeds 0, 1, 2;") in md
    assert "in brackets the paper's value in each table, labelled CIFAR-10 and CIFAR-100." in md
    # Table 5's own section says where its table is and keeps its claims, counted once.
    assert ("## table5 on cifar100\n\nSource: Table 5. Scale small: shown with Table 4 above (same runs), "
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
