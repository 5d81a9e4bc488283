"""studies/specs/*.toml: every paper table and figure as a study (studies/spec.py), the one home of
the paper's numbers. Each file loads, its cells and claims name its runs, and its claims hold on the
paper's own numbers wherever the paper prints both sides."""
import os

import pytest

from studies import spec

STUDIES = ("fig2", "fig3", "fig4", "table3", "table4", "table5", "table6", "table7", "table9",
           "table10a", "table10b", "table11a", "table11b", "table12", "table13", "adaptive", "baselines",
           "baselines_blackbox")
NOT_PAPER = ("adaptive", "baselines", "baselines_blackbox")   # studies of the evaluation itself: no paper table to fill
COMPOSITES = ("headline", "robustness")   # made of the files above (parts, keep)
TABLE6 = ("a_en_en", "a11", "a22", "S11", "S01", "S10", "S00", "T", "nT", "a_single")
# The metric names of spec.py's docstring, attacks aside.
METRICS = {"natural", "any_attack", *TABLE6, "blackbox_eps0", "blackbox_eps1",
           "auc_pgd", "auc_bim", "auc_mim", *(f"auc_sweep{i}" for i in range(8)), "seconds_per_epoch",
           "detection_aware", *(f"{kind}_{attack}" for kind in ("adaptive_auc", "evaded_robust") for attack in
                                ("pgd", "pgd_confident_beta0.1", "pgd_confident_beta0.5", "pgd_confident_beta1",
                                 "mul_pgd_confident", "two_stage"))}
# What each layout needs of its runs.
LAYOUT_EVALUATION = {"attacks": "attack_suite", "natural": "attack_suite",
                     "transferability": "transferability", "blackbox": "blackbox",
                     "detection": "detection", "training_time": "training_time"}


@pytest.fixture(scope="module")
def studies():
    return {name: spec.load(name) for name in STUDIES}


def labels(s):
    return {r.label for r in s.runs}


def test_every_paper_object_has_a_study(studies):
    assert sorted(spec.names()) == sorted([*STUDIES, *COMPOSITES, "paper"])
    # The paper's order: tables by number, then figures.
    assert spec.names()[:3] == ["table3", "table4", "table5"]
    assert spec.names()[-9:] == ["fig2", "fig3", "fig4", "adaptive", "baselines", "baselines_blackbox", "headline",
                                 "robustness", "paper"]
    assert spec.names().index("table9") < spec.names().index("table10a")
    for name, s in studies.items():
        assert s.name == name and s.title and s.source, name
        assert s.runs, name


def test_paper_is_every_study():
    whole = spec.load("paper")
    assert [p.name for p in whole.parts] == [n for n in spec.names()[:-1] if n not in COMPOSITES]
    assert sum(len(p.claims) for p in whole.parts) > 0


def test_headline_is_the_paper_files_kept_to_its_runs():
    headline, table4 = spec.load("headline"), spec.load("table4")
    assert [p.name for p in headline.parts] == ["table4", "table6", "fig2", "fig3", "adaptive"]
    t4 = headline.parts[0]
    assert [r.label for r in t4.runs] == ["ADV-EN_2", "ADP_2", "CCE-RM_2"]
    assert t4.paper == table4.paper and t4.attacks == table4.attacks
    # Only the claims between kept runs, unchanged.
    kept = [c for c in table4.claims if {c.a, c.b} <= {"ADV-EN_2", "ADP_2", "CCE-RM_2"}]
    assert t4.claims == tuple(kept) and kept


def test_layout_and_evaluations_agree(studies):
    for name, s in studies.items():
        assert LAYOUT_EVALUATION[s.layout] in s.evaluations, name
        if "attack_suite" in s.evaluations:
            assert s.attacks, f"{name}: the attack suite needs at least one attack"
        if s.layout in ("transferability", "blackbox"):
            assert all(r.members >= 2 for r in s.runs), name


def test_every_paper_cell_names_a_run(studies):
    for name, s in studies.items():
        runs = labels(s)
        for metric, cells in s.paper.items():
            assert cells, f"{name}: [paper.{metric}] is empty"
            for key in cells:
                if s.layout == "blackbox":
                    source, _, target = key.partition(">")
                    assert source in runs and target in runs, f"{name}: {metric} cell {key!r}"
                else:
                    assert key in runs, f"{name}: {metric} cell {key!r} is no run label"


def test_attack_rows_are_natural_or_the_studys_attacks(studies):
    for name, s in studies.items():
        if s.layout != "attacks" or name in NOT_PAPER:
            continue
        assert set(s.paper) <= {"natural", *s.attacks}, name
        # the paper's tables are full: every attack of the study is a row, with every run as a column
        assert set(s.paper) == {"natural", *s.attacks}, name
        for metric, cells in s.paper.items():
            assert set(cells) == labels(s), f"{name}: row {metric}"


def test_metrics_are_known(studies):
    for name, s in studies.items():
        for metric in list(s.paper) + [c.metric for c in s.claims]:
            assert metric in METRICS or metric in s.attacks, f"{name}: unknown metric {metric!r}"


def test_numbers_are_as_printed(studies):
    """Percent with one decimal (seconds for Table 9), as the paper prints them."""
    for name, s in studies.items():
        for metric, cells in s.paper.items():
            for key, v in cells.items():
                assert round(v, 1) == v, f"{name}: {metric} {key} = {v}"
                if metric != "seconds_per_epoch":
                    assert 0 <= v <= 100, f"{name}: {metric} {key} = {v} is no percentage"


def test_claims_name_runs_and_read_well(studies):
    for name, s in studies.items():
        runs = labels(s)
        for c in s.claims:
            assert c.text and c.direction in (">", "<") and c.margin >= 0, name
            assert c.a in runs, f"{name}: claim names {c.a!r}"
            if c.threshold:
                assert 0 < c.b < 100, f"{name}: threshold {c.b} is no percentage"
            else:
                assert c.b in runs and c.b != c.a, f"{name}: claim names {c.b!r}"


def test_claims_hold_on_the_papers_own_numbers(studies):
    """Where the paper prints both sides, a claim copied faithfully holds on them."""
    checked = 0
    for name, s in studies.items():
        for c in s.claims:
            cells = s.paper.get(c.metric, {})
            if c.a not in cells or not (c.threshold or c.b in cells):
                continue
            a, b = cells[c.a], (c.b if c.threshold else cells[c.b])
            holds = a > b + c.margin if c.direction == ">" else a < b - c.margin
            assert holds, f"{name}: {c.a} {c.direction} {c.b} on {c.metric} fails on the paper's {a} vs {b}"
            checked += 1
    assert checked > 150


def test_claims_by_and_stated_sizes(studies):
    """The studies past the paper hold this package's claims; a size is the gap the paper's text states
    ("a gap of 2%~3%" = [2, 3]), observations (i), (ii) and (iv) of Tables 3-5."""
    for name, s in studies.items():
        assert s.claims_by == ("package" if name in NOT_PAPER else "paper"), name
        for c in s.claims:
            if c.size is not None:
                low, high = c.size
                assert low <= high and f"gap of {low:g}%" in c.text, f"{name}: size {c.size} of {c.text!r}"
        assert sum(c.size is not None for c in s.claims) == (4 if name in ("table3", "table4", "table5") else 0), name


def _table4_raw(replace: str = "") -> dict:
    import tomllib
    with open(os.path.join(spec.SPEC_DIR, "table4.toml")) as f:
        return tomllib.loads(f.read().replace("size = [2.0, 3.0]", replace or "size = [2.0, 3.0]"))


@pytest.mark.parametrize("line, error", [("size = [3.0, 2.0]", "low > high"), ("size = [3.0]", "size must be"),
                                         ('size = "2-3"', "size must be")])
def test_bad_sizes_are_refused(line, error):
    with pytest.raises(spec.SpecError, match=error):
        spec._parse(_table4_raw(line), "table4.toml")


def test_unknown_claims_by_is_refused():
    with pytest.raises(spec.SpecError, match="claims_by"):
        spec._parse(dict(_table4_raw(), claims_by="nobody"), "table4.toml")


def test_claim_counts(studies):
    """Tables 3-5: observations (i), (ii) x 2 and (iv) plus (iii) for every attack and for the worst
    case over them, N and baseline."""
    for name in ("table3", "table4", "table5"):
        s = studies[name]
        assert len(s.claims) == 4 + 2 * 2 * (len(s.attacks) + 1), name
        assert sum(c.metric == "any_attack" for c in s.claims) == 4, name
    assert not studies["table12"].claims and not studies["table13"].claims


def test_one_label_one_run_per_data_set_and_arch(studies):
    """A label means the same training job wherever it appears (e.g. CCE-RM_2 of Tables 4, 6, 10a)."""
    seen = {}
    for name, s in studies.items():
        for r in s.runs:
            key = (s.dataset, r.arch, r.label)
            assert seen.setdefault(key, (name, r.key(s.dataset)))[1] == r.key(s.dataset), \
                f"{name}: {r.label} differs from {seen[key][0]}'s"


def test_table6_satisfies_its_own_identities(studies):
    """nT = 100 - a(en,en) - |S00|, a_single = a(en,en) - |S11|, the S's sum to 100 (rounding aside)."""
    p = studies["table6"].paper
    assert set(p) == set(TABLE6)
    for label in labels(studies["table6"]):
        r = {m: p[m][label] for m in TABLE6}
        assert r["nT"] == pytest.approx(100 - r["a_en_en"] - r["S00"], abs=0.15), label
        assert r["a_single"] == pytest.approx(r["a_en_en"] - r["S11"], abs=0.15), label
        assert r["S11"] + r["S01"] + r["S10"] + r["S00"] == pytest.approx(100, abs=0.15), label


def test_shared_columns_agree_across_tables(studies):
    """The paper prints some runs twice: Table 10's ADP / CCE-RM are Table 4's and 5's, Table 11's
    lambda = 0 column is Table 10a's CCE-Base_2, Table 7's CNN / ResNet columns are Tables 4 and 3's
    natural accuracies, the black-box diagonals are Table 6's a(en,en) (ADV-EN, ADP, CCE-RM)."""
    t = studies
    for ten, base in (("table10a", "table4"), ("table10b", "table5")):
        for metric, cells in t[ten].paper.items():
            for label in ("ADP_2", "CCE-RM_2", "ADP_3", "CCE-RM_3"):
                assert cells[label] == t[base].paper[metric][label], (ten, metric, label)
    for metric, cells in t["table11a"].paper.items():
        assert cells["dm=0"] == t["table11b"].paper[metric]["pm=0"] == t["table10a"].paper[metric]["CCE-Base_2"]
    nat = t["table7"].paper["natural"]
    for n in (2, 3):
        for m in ("ADV-EN", "ADP", "CCE-RM"):
            assert nat[f"{m}_{n}"] == t["table4"].paper["natural"][f"{m}_{n}"]
            assert nat[f"{m}_{n} (ResNet)"] == t["table3"].paper["natural"][f"{m}_{n}"]
    assert nat["CCE-DM_2"] == t["table11a"].paper["natural"]["dm=5"]
    for m in ("ADV-EN_2", "ADP_2", "CCE-RM_2"):
        assert t["table12"].paper["blackbox_eps0"][f"{m}>{m}"] == t["table6"].paper["a_en_en"][m]
