"""What a study measured: results.jsonl in long format, each part's table beside the paper's numbers,
and the verdict on each claim of the studies (DESIGN.md, contracts 10 and 11). The page that puts
them together is studies/page.py.

Usage::

    from studies import results
    rows = results.collect(plan)                          # one dict per (run, seed, evaluation, metric)
    results.write_jsonl(rows, "results/table4/results.jsonl")
    checked = results.check_claims(plan, rows)            # every claim's verdict, by part
    md = results.study_table(part, rows)                  # one part's table

Only results computed on the weights each run holds now are collected (eval.reuse): a table never
mixes weights. Cells: mean ± sd over seeds (one seed: its 95 % Wilson interval) and the paper's
value in brackets; each row names its settings and n. Parts whose cells are some of an earlier
part's training runs (Tables 4 and 5 at the Fashion-MNIST scales, Fig 3 in Fig 2's: shared_tables)
are one table, each cell with every part's paper value by its label. Claims: the seed is the unit.
Per seed, the difference a - b; over the plan's seeds, their mean with its 95 % t interval
(eval.stats.seed_interval, its sd floored by the test noise of the data: _test_noise); a verdict:
holds, does not hold, or cannot be told apart at this sample size; beside it the paper's own a - b,
whether the size the paper states meets our interval, and the verdict after Holm's adjustment over
the page's distinct claims. Claims on the same runs (claim_identity) get one verdict, counted once.
``resolution`` is what the dry run says of the claims before anything runs.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Union

import numpy as np

from attacks.settings import ATTACK_NAMES
from eval import stats
from eval.analyses import transferability
from eval.target import history
from eval.analyses.attack_suite.report import ANY_ROW, NAT_ROW, attack_label, cascade_label
from studies.plan import Cell, Plan, runs_folder
from studies.spec import Claim, Study

ROW_KEYS = ("study", "dataset", "arch", "method", "preset", "members", "lambda_pm", "lambda_dm", "seed",
            "evaluation", "attack", "eps", "eps_iter", "nb_iter", "n", "n_pos", "over", "metric", "value",
            "weights_sha256", "label", "key", "cell")
TRANSFER_METRICS = transferability.METRICS   # Table 6's symbols, shown in percent


def _base(part: Study, cell: Cell, fp: str) -> dict:
    from cce_tf import config

    method, pm, dm = config.resolve_method(cell.run.method, cell.run.lambda_pm, cell.run.lambda_dm)
    return dict(study=part.name, dataset=cell.dataset, arch=cell.run.arch, method=method,
                preset=cell.run.method if cell.run.method in config.PRESETS else None,
                members=cell.run.members, lambda_pm=pm if method == "cce" else None,
                lambda_dm=dm if method == "cce" else None, seed=cell.seed, weights_sha256=fp,
                label=cell.run.label, cell=cell.run.label)


def _row(base: dict, **kw) -> dict:
    row = dict(base, **kw)
    return {k: row.get(k) for k in ROW_KEYS}


def _target(run_dir: str):
    """The run's results, through eval.target.Target (its config is not needed to read them)."""
    from eval.target import Target

    return Target.results_of(run_dir)


def _cell_rows(part: Study, cell: Cell, attacks: tuple[str, ...]) -> list[dict]:
    """Every metric of one cell that this part's table shows: each analysis of the part that
    evaluates one run renders its own rows (eval.analyses), from its result on the weights the run
    holds now; the run's seconds per epoch (training_time) from its history."""
    from eval.analyses import ANALYSES

    target = _target(cell.run_dir)
    try:
        fp = target.fingerprint
    except OSError:
        return []  # not trained yet
    base, rows = _base(part, cell, fp), []
    for name in part.evaluations:
        a = ANALYSES.get(name)
        if a is None or a.SCOPE != "run":
            continue
        r = a.stored(target)
        if r:
            rows += [_row(base, **row) for row in a.rows(r, attacks)]
    if "training_time" in part.evaluations:
        secs = [e["seconds"] for e in (history(cell.run_dir) or []) if isinstance(e, dict) and "seconds" in e]
        if secs:
            rows.append(_row(base, evaluation="training_time", attack=None, n=len(secs),
                             metric="seconds_per_epoch", value=float(np.mean(secs)), key="seconds_per_epoch"))
    return rows


def _runs_rows(plan: Plan, part: Study, cells: list[Cell], analysis) -> list[dict]:
    """The rows of an analysis across a part's runs (SCOPE "runs"), per seed: each row has the
    columns of the run it names (``run``)."""
    rows = []
    for seed in plan.seeds:
        seed_cells = [c for c in cells if c.seed == seed]
        if not seed_cells:
            continue
        folder = runs_folder(plan.out_dir, analysis.NAME, seed_cells[0].dataset, seed, [c.run_dir for c in seed_cells])
        targets = [_target(c.run_dir) for c in seed_cells]
        try:
            r = analysis.stored(targets, folder)
        except OSError:
            continue
        if not r:
            continue
        for row in analysis.rows(r):
            i = row.pop("run")
            rows.append(_row(_base(part, seed_cells[i], targets[i].fingerprint), **row))
    return rows


def _analyses(part: Study) -> list:
    """The analyses (eval.analyses.ANALYSES) a part's ``evaluations`` name, in its order."""
    from eval.analyses import ANALYSES

    return [ANALYSES[e] for e in part.evaluations if e in ANALYSES]


def collect(plan: Plan) -> list[dict]:
    """results.jsonl's rows for every cell of the plan that has results on its current weights."""
    rows = []
    for part in plan.study.parts or (plan.study,):
        cells = [c for c in plan.cells if c.study == part.name]
        attacks = plan.scale.attacks_for(part.attacks, part.full_evaluation)
        for cell in cells:
            rows += _cell_rows(part, cell, attacks)
        for a in _analyses(part):
            if a.SCOPE == "runs":
                rows += _runs_rows(plan, part, cells, a)
    return rows


def write_jsonl(rows: list[dict], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=False) + "\n")
    os.replace(path + ".tmp", path)
    return path


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

_PERCENT = ("robust_accuracy", "natural_accuracy", "auc", "accuracy") + TRANSFER_METRICS
# Shares of the n samples (a Wilson interval applies); T, nT and a_single are sums of such shares.
_PROPORTIONS = ("robust_accuracy", "natural_accuracy", "accuracy", "a_en_en", "a11", "a22", "S11", "S01",
                "S10", "S00")
# The paper's names of the data sets, for the page.
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
ARCH_NAMES = {"cnn": "CNN", "resnet20": "ResNet-20"}


def _scale_of(metric: str) -> float:
    return 100.0 if metric in _PERCENT else 1.0


def cell_text(rows: list[dict], paper: Union[None, float, dict[str, Optional[float]]]) -> str:
    """"45.1 ± 1.2 (44.7)": our mean ± sd over seeds (one seed: its Wilson interval), the paper's. A
    table of shared runs gives each part's paper number by its label: "45.1 ± 1.2 (CIFAR-10: 44.7;
    CIFAR-100: 35.3)"."""
    given = paper.items() if isinstance(paper, dict) else [("", paper)]
    texts = [f"{label}: {v:.1f}" if label else f"{v:.1f}" for label, v in given if v is not None]
    paper_txt = f" ({'; '.join(texts)})" if texts else ""
    if not rows:
        return "–" + paper_txt
    scale = _scale_of(rows[0]["metric"])
    values = [r["value"] for r in rows]
    if len(values) == 1:
        r = rows[0]
        if r["metric"] in _PROPORTIONS and r["n"]:
            return stats.wilson_cell(r["value"], r["n"]) + paper_txt
        return f"{scale * r['value']:.1f}{paper_txt}"
    return stats.format_mean_sd(values, scale=scale) + paper_txt


def _grid(part: Study, rows: list[dict], others: tuple[Study, ...] = ()) -> tuple[list[str], list[str], dict]:
    """(row keys, column keys, {(row, col): [rows over seeds]}) of one study's table; ``others``: the
    parts it also shows (the same runs, shared_tables), whose paper numbers and claims name rows too."""
    shown = (part, *others)
    paper_keys = [k for p in shown for k in p.paper]
    mine = [r for r in rows if r["study"] == part.name]
    by: dict[tuple[str, str], list[dict]] = {}
    for r in mine:
        by.setdefault((r["key"], r["cell"]), []).append(r)
    labels = [run.label for run in part.runs]
    if part.layout == "blackbox":
        keys = sorted({r["key"] for r in mine} | set(paper_keys))
        return keys, [f"{a}>{b}" for a in labels for b in labels], by
    row_keys = list(dict.fromkeys([*paper_keys, *(r["key"] for r in mine)]))
    if part.layout == "attacks":
        # This part's attacks, then those other studies ran on the same weights, then the worst case.
        order = ["natural", *part.attacks, *(a for a in ATTACK_NAMES if a not in part.attacks),
                 "any_attack"]
        # Beside the attacks, the detection AUCs this table's paper numbers or claims name (not the
        # ε sweep of Fig 4, which is its own study's).
        named = {*paper_keys, *(c.metric for p in shown for c in p.claims)}
        row_keys = [k for k in row_keys if not k.startswith("auc_") or k in named]
        row_keys = sorted(row_keys, key=lambda k: order.index(k) if k in order else len(order))

    def values(key: str) -> set:
        return {(r["cell"], r["seed"], r.get("eps"), r["value"]) for r in mine if r["key"] == key}
    # Fig 4's sweep point at PGD's own ε is the "AUC, PGD" row again: one number, shown once.
    pgd = values("auc_pgd")
    row_keys = [k for k in row_keys if not (k.startswith("auc_sweep") and k not in paper_keys and pgd
                                            and values(k) == pgd)]
    return row_keys, labels, by


def study_table(part: Study, rows: list[dict], shared: Optional[dict[str, Study]] = None,
                shown: Optional[dict[tuple, str]] = None) -> str:
    """One Markdown table: rows = metrics, columns = runs (the black box: one table per ε). ``shared``:
    {label: part} of every part whose runs this table shows, ``part`` first (shared_tables): each
    cell then carries every part's paper number by its label. ``shown``: the cells the page's earlier
    tables showed (cell_identity -> their source), updated with this table's; such a cell reads "as
    in SOURCE", and a row whose every cell is one is left out."""
    row_keys, cols, by = _grid(part, rows, tuple(shared.values())[1:] if shared else ())
    shown = {} if shown is None else shown

    def paper(key: str, col: str):
        if not shared:
            return part.paper.get(key, {}).get(col)
        return {label: p.paper.get(key, {}).get(col) for label, p in shared.items()}

    if part.layout == "blackbox":
        labels = [run.label for run in part.runs]
        out = []
        for key in row_keys:
            lines = [f"**{key}** (rows: source, columns: target)", "",
                     "| source \\ target | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            for a in labels:
                cells = [cell_text(by.get((key, f"{a}>{b}"), []), paper(key, f"{a}>{b}")) for b in labels]
                lines.append(f"| {a} | " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
        return "\n\n".join(out)
    body = []
    for key in row_keys:
        ids = {c: cell_identity(by.get((key, c), [])) for c in cols}
        before = {c: shown.get(ids[c]) for c in cols if ids[c] and not paper(key, c)}
        if by_us := [c for c in cols if by.get((key, c)) and not before.get(c)]:
            shown.update({ids[c]: _source(part) for c in by_us if ids[c]})
        elif any(before.values()):
            continue   # every value of the row is in an earlier table
        cells = [f"as in {before[c]}" if before.get(c) else cell_text(by.get((key, c), []), paper(key, c))
                 for c in cols]
        ran = [r for c in cols for r in by.get((key, c), [])]
        body.append([f"{_row_label(key, ran)}{settings_text(ran)}", *cells])
    return markdown_table(["", *cols], body, right=tuple(cols))


def cell_identity(rows: list[dict]) -> Optional[tuple]:
    """What makes two tables' cells one number: the row, the run label and the weights of every seed
    (None for rows that do not name their weights)."""
    if not rows or any(r.get("weights_sha256") is None for r in rows):
        return None
    return rows[0]["key"], rows[0]["cell"], frozenset((r["seed"], r["weights_sha256"]) for r in rows)


def settings_text(rows: list[dict]) -> str:
    """" (k = 20, ε = 0.1, η = 0.0125; n = 1000)": what the rows' attack ran with (the paper's rows say
    k = 100; ours say what they ran) and on how many test images; several settings are listed apart,
    several n as "n = 250/500"; none gives ""."""
    seen = dict.fromkeys((r.get("nb_iter"), r["eps"], r.get("eps_iter")) for r in rows if r.get("eps") is not None)
    texts = [", ".join(t for t in (f"k = {k}" if k else "", f"ε = {e:.4g}", f"η = {h:.4g}" if h else "") if t)
             for k, e, h in seen]
    ns = sorted({r["n"] for r in rows if r.get("n")})
    if ns:   # an AUC's n (clean and adversarial images ranked) differs by seed: its range
        texts.append("n = " + (f"{ns[0]}–{ns[-1]}" if len(ns) > 2 else "/".join(map(str, ns))))
    return f" ({'; '.join(texts)})" if texts else ""


def _row_label(key: str, rows: list[dict] = ()) -> str:
    if key == "natural":
        return NAT_ROW
    if key == "any_attack":   # the attacks its worst case is over, as the suite chose them (engine.any_attack)
        over = dict.fromkeys(a for r in rows for a in (r.get("over") or "").split(",") if a)
        return f"**{ANY_ROW} over {', '.join(attack_label(a, []) for a in over) or 'every attack row of its column'}**"
    if key == "cascade":   # its stages and their k, as the suite wrote them ("pgd:40,...")
        stages = dict.fromkeys(s for r in rows for s in (r.get("over") or "").split(",") if s)
        return cascade_label({s.split(":")[0]: int(s.split(":")[1]) for s in stages}) if stages else "Cascade"
    if key == "detection_aware":
        return "**Detection-aware robust accuracy (no adaptive attack evades at 5 % FPR)**"
    if key.startswith("adaptive_auc_"):
        return f"AUC, detector-aware {key[13:]}"
    if key.startswith("evaded_robust_"):
        return f"Not evaded by {key[14:]} (5 % FPR)"
    if key.startswith("auc_sweep"):
        return f"AUC, PGD ε sweep point {int(key[9:]) + 1}"
    if key.startswith("auc_"):
        return f"AUC, {attack_label(key[4:], [])}"
    return attack_label(key, [])


def study_csv(part: Study, rows: list[dict]) -> list[list]:
    row_keys, cols, by = _grid(part, rows)
    out = []
    for key in row_keys:
        for c in cols:
            rs = by.get((key, c), [])
            paper = part.paper.get(key, {}).get(c)
            if not rs and paper is None:
                continue
            vals = [r["value"] for r in rs]
            mean, sd = stats.mean_sd(vals) if vals else (None, None)
            lo = hi = None
            if len(rs) == 1 and rs[0]["n"] and rs[0]["metric"] in _PROPORTIONS:
                lo, hi = stats.wilson_interval(round(rs[0]["value"] * rs[0]["n"]), rs[0]["n"])
            out.append([part.name, key, c, len(vals), mean, sd, lo, hi,
                        None if paper is None else paper / _scale_of(rs[0]["metric"] if rs else "robust_accuracy"),
                        ";".join(f"{v:.6g}" for v in vals)])
    return out


# --------------------------------------------------------------------------------------------------
# Claims (DESIGN.md, contract 11: the seed is the unit of a method claim)
# --------------------------------------------------------------------------------------------------

NOT_MEASURED = "not measured"
NOT_AT_SCALE = "not measured at this scale"
# DESIGN.md contract 11: a robustness verdict needs attacks that break an undefended model.
CANARY_FAILS = "no verdict: this scale's attacks fail the undefended canary"
HOLM_ALPHA = 0.05


def _parts(plan: Plan) -> tuple[Study, ...]:
    return plan.study.parts or (plan.study,)


def _values(rows: list[dict], part: Study, key: str, label: str) -> dict[int, dict]:
    return {r["seed"]: r for r in rows if r["study"] == part.name and r["key"] == key and r["cell"] == label}


def claim_identity(plan: Plan, part: Study, claim: Claim) -> tuple:
    """What makes two claims one: the metric, run a and run b as training jobs (RunSpec.key on the
    part's data set in this plan) or b's threshold, the direction and the margin (a run's any-attack
    row is over every attack on file for its weights, whichever part shows it). At the
    Fashion-MNIST scales Tables 4 and 5 (10a and 10b) train the same runs, so each claim of Table 5
    is one of Table 4's."""
    ds = next((c.dataset for c in plan.cells if c.study == part.name), plan.scale.dataset_for(part.dataset))
    b = float(claim.b) if claim.threshold else part.run(claim.b).key(ds)
    return claim.metric, part.run(claim.a).key(ds), b, claim.direction, claim.margin


def _left_out(plan: Plan, part: Study, claim: Claim) -> Optional[str]:
    """Why this plan's scale cannot measure the claim at all, or None."""
    sides = (claim.a,) if claim.threshold else (claim.a, claim.b)
    archs = sorted({part.run(s).arch for s in sides if not plan.scale.keeps(part.run(s))})
    if archs:
        return f"{', '.join(archs)} members are not trained at scale {plan.scale.name}"
    if claim.metric in part.attacks and claim.metric not in plan.scale.attacks_for(part.attacks,
                                                                                   part.full_evaluation):
        return f"scale {plan.scale.name} does not run {claim.metric}"
    return None


def _flags(plan: Plan, part: Study, label: str, seed: int, key: str) -> Optional[np.ndarray]:
    """The per-sample flags behind row ``key`` of run ``label`` at ``seed``, from the analysis of the
    part that keeps them (``flags`` of eval.analyses); None where none does."""
    cell = next((c for c in plan.cells if c.study == part.name and c.run.label == label and c.seed == seed), None)
    for a in (a for a in _analyses(part) if cell is not None and hasattr(a, "sample_flags")):
        try:
            r = a.stored(_target(cell.run_dir))
        except OSError:   # not trained yet
            return None
        found = a.sample_flags(r, key) if r else None
        if found is not None:
            return np.asarray(found, bool)
    return None


def _test_noise(plan: Plan, part: Study, claim: Claim, a_rows: dict[int, dict], b_rows: dict[int, dict],
                seeds: list[int]) -> float:
    """The seed interval's floor on the sd: the test noise each per-seed difference carries
    (DESIGN.md, contract 11). An AUC: Hanley–McNeil on its positives and negatives (both sides' for a
    difference; eval.stats.least_auc_noise). A share of test images between two runs: the observed
    disagreement of their per-sample flags on the images both saw (eval.stats.observed_test_noise),
    else the least disagreement the two accuracies allow (least_test_noise); against a threshold, the
    binomial noise. 0 for the rest (T, seconds), whose test noise has no such bound."""
    metric = a_rows[seeds[0]]["metric"]
    if metric == "auc":
        if any(a_rows[s].get("n_pos") is None for s in seeds):
            return 0.0   # results from before the AUC rows carried their positives

        def side(row):
            return row["value"], row["n_pos"], row["n"] - row["n_pos"]
        return stats.least_auc_noise([(side(a_rows[s]), None if claim.threshold else side(b_rows[s]))
                                      for s in seeds])
    if metric not in _PROPORTIONS:
        return 0.0
    if claim.threshold:
        return stats.least_test_noise([(a_rows[s]["value"], None, a_rows[s]["n"]) for s in seeds])
    observed = []
    for s in seeds:
        fa, fb = (_flags(plan, part, label, s, claim.metric) for label in (claim.a, claim.b))
        if fa is None or fb is None:
            break
        n = min(len(fa), len(fb))
        observed.append((float(fa[:n].mean() - fb[:n].mean()), n, int(np.sum(fa[:n] != fb[:n]))))
    if len(observed) == len(seeds):
        return stats.observed_test_noise(observed)
    return stats.least_test_noise([(a_rows[s]["value"], b_rows[s]["value"], max(a_rows[s]["n"], b_rows[s]["n"]))
                                   for s in seeds])


def check_claim(plan: Plan, part: Study, claim: Claim, rows: list[dict]) -> dict:
    """One claim on the plan's seeds. ``per_seed``: a - b per seed (fractions for percentages; a -
    threshold for a threshold claim); ``diff``, ``ci_low``, ``ci_high``, ``p``: their mean, its 95 %
    t interval over seeds and the two-sided p of "a - b = margin" (eval.stats.seed_interval); ``sd``:
    the one that interval used, the per-seed differences' own or, if larger, the test noise of
    their data (_test_noise), itself ``noise``; ``n_images``: the fewest test images a seed's rows
    rest on; the
    verdict from that interval (one seed: no interval, cannot be told apart); ``paper_diff``: the
    paper's own a - b where it prints both (in its printed unit); ``size_in_interval``: whether the size
    the paper's text states meets our interval ("yes" / "no" / "–")."""
    a_rows = _values(rows, part, claim.metric, claim.a)
    scale = _scale_of(next(iter(a_rows.values()))["metric"]) if a_rows else 100.0
    if claim.threshold:
        b_rows = {s: {"value": float(claim.b) / scale} for s in a_rows}
    else:
        b_rows = _values(rows, part, claim.metric, claim.b)
    seeds = sorted(set(a_rows) & set(b_rows) & set(plan.seeds))
    paper = part.paper.get(claim.metric, {})
    paper_b = claim.b if claim.threshold else paper.get(claim.b)
    out = dict(text=claim.text, metric=claim.metric, a=claim.a, b=claim.b, direction=claim.direction,
               margin=claim.margin, size=claim.size, scale=scale, seeds=seeds,
               per_seed=[a_rows[s]["value"] - b_rows[s]["value"] for s in seeds],
               paper_diff=None if claim.a not in paper or paper_b is None else paper[claim.a] - paper_b,
               diff=None, ci_low=None, ci_high=None, p=None, sd=None, noise=None, n_images=None,
               size_in_interval="–")
    if not seeds:
        why = _left_out(plan, part, claim)
        return dict(out, method=why or "no results yet", verdict=NOT_AT_SCALE if why else NOT_MEASURED)
    floor = _test_noise(plan, part, claim, a_rows, b_rows, seeds)
    s = stats.seed_interval(out["per_seed"], claim.margin / scale, min_sd=floor)
    out.update(diff=s["diff"], ci_low=s["ci_low"], ci_high=s["ci_high"], p=s["p"], sd=s["sd"], noise=floor,
               n_images=min((a_rows[k].get("n") or 0 for k in seeds), default=0) or None)
    if s["p"] is None:
        return dict(out, method="one seed: no seed-level interval", verdict=stats.UNDECIDED)
    if claim.size:
        meets = claim.size[0] <= scale * s["ci_high"] and scale * s["ci_low"] <= claim.size[1]
        out["size_in_interval"] = "yes" if meets else "no"
    return dict(out, method=f"t interval over {len(seeds)} seeds",
                verdict=stats.verdict(s["ci_low"], s["ci_high"], claim.direction, claim.margin / scale))


def check_claims(plan: Plan, rows: list[dict]) -> dict[str, list[dict]]:
    """Every claim of every part of the plan (parts this scale does not reproduce included), by part
    name, each ``check_claim``'s dict plus ``by`` (the study's claims_by), ``where`` (its part's
    source) and ``holm``.

    One verdict per distinct claim (``claim_identity``): of the claims that are one, the first with
    the most seeds measured is counted; the others get ``same_as`` (its ``where``) and its verdict.
    ``holm``: the verdict after Holm's adjustment (eval.stats.holm, alpha = HOLM_ALPHA) over the
    family of every distinct claim of the plan with a seed-level test (two seeds or more), from the
    p of each; None for a claim outside that family."""
    out, groups = {}, {}
    failed = canaries_failed(plan)
    for part in _parts(plan):
        out[part.name] = []
        for claim in part.claims:
            identity = claim_identity(plan, part, claim)
            c = dict(gated(plan, part, claim, check_claim(plan, part, claim, rows), failed), by=part.claims_by,
                     where=_source(part), same_as=None, holm=None, identity=identity)
            out[part.name].append(c)
            groups.setdefault(identity, []).append(c)
    counted = [max(g, key=lambda c: len(c["seeds"])) for g in groups.values()]
    family = [c for c in counted if c["p"] is not None]
    for c, significant in zip(family, stats.holm([c["p"] for c in family], HOLM_ALPHA)):
        c["holm"] = stats.significance_verdict(c["diff"], significant, c["direction"], c["margin"] / c["scale"])
    for group, first in zip(groups.values(), counted):
        for c in group:
            if c is not first:
                c.update(same_as=first["where"], verdict=first["verdict"], holm=first["holm"])
    return out


VERDICTS = (stats.HOLDS, stats.FAILS, stats.UNDECIDED)


def canaries_failed(plan: Plan) -> set[tuple[str, str]]:
    """(data set, arch) whose undefended canary was measured and keeps 10 % or more under PGD."""
    out = set()
    for cell in plan.canaries:
        c = (sanity_report(cell.run_dir) or {}).get("undefended")
        if c and not c["passed"]:
            out.add((cell.dataset, cell.run.arch))
    return out


def gated(plan: Plan, part: Study, claim: Claim, checked: dict, failed: set[tuple[str, str]]) -> dict:
    """``checked`` (check_claim's dict) without a verdict where the claim is on robustness under the
    suite's attacks and those attacks fail the undefended canary of its data set and arch
    (``failed``: canaries_failed): the interval stays shown, it decides nothing, nor enters Holm."""
    ds = next((c.dataset for c in plan.cells if c.study == part.name), None)
    robustness = claim.metric == "any_attack" or claim.metric in ATTACK_NAMES
    if robustness and (ds, part.run(claim.a).arch) in failed and checked["verdict"] in VERDICTS:
        return dict(checked, verdict=CANARY_FAILS, p=None)
    return checked


def claims_summary(checked: dict[str, list[dict]]) -> str:
    """The page's count of distinct claims, the paper's and this package's apart: verdicts, and how
    many hold / do not hold after Holm's adjustment."""
    every = [c for cs in checked.values() for c in cs]
    counted = [c for c in every if c["same_as"] is None]
    family = sum(c["holm"] is not None for c in counted)
    lines = [f"**Claims:** {len(counted)} distinct ({len(every)} in the studies' files, "
             f"{len(every) - len(counted)} of them repeating a claim of another table on the same runs); "
             "the seed is the unit of each verdict (95 % t interval of the per-seed differences)."]
    groups = [(whose, mine) for by, whose in (("paper", "the paper's"), ("package", "this package's"))
              if (mine := [c for c in counted if c["by"] == by])]
    for whose, mine in groups:
        n = {v: sum(c["verdict"] == v for c in mine) for v in (*VERDICTS, CANARY_FAILS, NOT_MEASURED, NOT_AT_SCALE)}
        holm = {v: sum(c["holm"] == v for c in mine) for v in (stats.HOLDS, stats.FAILS)}
        counts = [f"{n[stats.HOLDS]} hold ({holm[stats.HOLDS]} after Holm's adjustment)",
                  f"{n[stats.FAILS]} do not hold ({holm[stats.FAILS]} after Holm's adjustment)",
                  f"{n[stats.UNDECIDED]} {stats.UNDECIDED}"]
        counts += [f"{n[v]} {v}" for v in (CANARY_FAILS, NOT_MEASURED, NOT_AT_SCALE) if n[v]]
        lines.append(f"- {whose} {len(mine)}: " + ", ".join(counts) + ".")
    lines.append(f"- Holm's adjustment (α = {HOLM_ALPHA}) is over the {family} distinct claims of this page "
                 "measured on two seeds or more" + (", the paper's and this package's together." if len(groups) > 1
                                                     else "."))
    return "\n".join(lines)


def scale_note(plan: Plan) -> str:
    """Once per page: the runs this scale does not train, and the tables that lose them."""
    dropped = {p.name: [r for r in p.runs if not plan.scale.keeps(r)] for p in _parts(plan)}
    archs = sorted({r.arch for runs in dropped.values() for r in runs})
    if not archs:
        return ""
    whole = [_source(p) for p in _parts(plan) if p.runs and len(dropped[p.name]) == len(p.runs)]
    some = [_source(p) for p in _parts(plan) if 0 < len(dropped[p.name]) < len(p.runs)]
    said = ([f"does not reproduce {_listed(whole)}"] if whole else []) + (
        [f"leaves those columns out of {_listed(some)}"] if some else [])
    return (f"Runs with {', '.join(archs)} members are trained at the paper scale only (`--scale paper`), so "
            f"scale {plan.scale.name} {' and '.join(said)}; their claims count as not measured at this scale.")


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def claims_table(checked: list[dict]) -> str:
    """Differences in the metric's printed unit (percentage points; seconds for training time). Each
    row names its two sides first; a column with no value in any row is left out."""
    head = ["a − b", "Claim", "per seed (a − b)", "mean a − b [95 % CI]", "method", "verdict", "paper's a − b",
            "paper's size in our interval?", "Holm"]
    body = []
    for c in checked:
        per = ", ".join(f"{c['scale'] * d:+.1f}" for d in c["per_seed"]) or "–"
        verdict = f"**{c['verdict']}**"
        if c["same_as"]:
            verdict = f"same claim as {c['same_as']}'s: {verdict}"
        size = c["size_in_interval"] + (f" ({c['size'][0]:g} to {c['size'][1]:g})" if c["size"] else "")
        body.append([sides(c), c["text"], per, _difference_text(c), c["method"], verdict, _paper_diff_text(c),
                     size, c["holm"] or "–"])
    return markdown_table(head, body, right=("paper's a − b",))


def markdown_table(head: list[str], body: list[list[str]], right: tuple[str, ...] = ()) -> str:
    """A Markdown table without the columns that are "–" (no value) in every row."""
    keep = [i for i in range(len(head)) if not body or any(row[i] != "–" for row in body)]
    lines = ["|" + "|".join(f" {head[i]} " if head[i] else " " for i in keep) + "|",
             "|" + "".join("---:|" if head[i] in right else "---|" for i in keep)]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in body]
    return "\n".join(lines)


def sides(c: dict) -> str:
    """"CCE-RM_2 − ADP_2, PGD": the two sides of a claim and what it compares."""
    b = f"{c['b']:g}" if isinstance(c["b"], (int, float)) else c["b"]
    what = "worst case over every attack" if c["metric"] == "any_attack" else _row_label(c["metric"])
    return f"{c['a']} − {b}, {what}"


def _difference_text(c: dict) -> str:
    """"+1.7 [+0.3, +3.0]": a check_claim's mean a − b and its 95 % t interval, in the metric's unit."""
    k = c["scale"]
    if c["diff"] is None:
        return "–"
    if c["ci_low"] is None:
        return f"{k * c['diff']:+.1f}"
    return f"{k * c['diff']:+.1f} [{k * c['ci_low']:+.1f}, {k * c['ci_high']:+.1f}]"


def _paper_diff_text(c: dict) -> str:
    return "–" if c["paper_diff"] is None else f"{c['paper_diff']:+.1f}"


def resolution(plan: Plan, rows: list[dict]) -> list[str]:
    """The dry run's word on the claims, before anything runs: how many distinct claims the plan
    checks on how many seeds, and the smallest difference those seeds resolve, the half-width
    t_{0.975, n-1} · sd / √n of a claim's interval with n the plan's seed count and sd the median sd
    (as check_claim's intervals use it) of the per-seed differences (percentage points) of the
    distinct claims measured so far on two seeds or more (``rows``: results.collect(plan))."""
    counted = [c for cs in check_claims(plan, rows).values() for c in cs if c["same_as"] is None]
    if not counted:
        return []
    n = len(plan.seeds)
    if n < 2:
        return [f"claims: {len(counted)} distinct, checked on the plan's one seed: one seed gives no "
                f"seed-level interval, so none can hold or fail (--seeds 0,1,2 gives three)"]
    sds = [c["scale"] * c["sd"] for c in counted if c["sd"] is not None and c["scale"] == 100.0]  # points
    if sds:
        sd = float(np.median(sds))
        smallest = (f"±{stats.t_half_width(sd, n):.1f} points (t_0.975,{n - 1} × {sd:.1f} / √{n}: the median "
                    f"sd of the per-seed differences of the {len(sds)} claims measured so far)")
    else:
        smallest = "unknown until two seeds of a claim are measured"
    lines = [f"claims: {len(counted)} distinct, each checked on the plan's {n} seeds (t interval over seeds)",
             f"  smallest difference a claim resolves with {n} seeds: {smallest}"]
    left_out = [c for c in counted if c["verdict"] == NOT_AT_SCALE]
    if left_out:
        why = sorted({c["method"] for c in left_out})
        lines.append(f"  not measured at scale {plan.scale.name}: {len(left_out)} of {len(counted)} ({'; '.join(why)})")
    return lines


def sanity_report(run_dir: str) -> Optional[dict]:
    """The sanity report (with its canaries) of a run on the weights it holds now, from the analysis
    that checks its attacks for masking (``sanity`` of eval.analyses: the attack suite)."""
    from eval.analyses import ANALYSES

    target = _target(run_dir)
    for a in ANALYSES.values():
        if hasattr(a, "sanity"):
            try:
                r = a.stored(target)
            except OSError:
                return None
            return None if r is None else a.sanity(r)
    return None


def check_lines(plan: Plan, part: Study) -> tuple[list[str], list[str]]:
    """(flags for the top of the part's table, one bullet per run, seed and check): the convergence
    checks an analysis of the part reports on its own result (``check_lines`` of eval.analyses, e.g.
    the detector-aware attacker's k-doubling), on the weights each run holds now."""
    flags, lines = [], []
    for cell in (c for c in plan.cells if c.study == part.name):
        for a in (a for a in _analyses(part) if hasattr(a, "check_lines")):
            try:
                r = a.stored(_target(cell.run_dir))
            except OSError:   # not trained yet
                continue
            top, below = a.check_lines(r) if r else ([], [])
            flags += [f"**{cell.run.label}, seed {cell.seed}: {f}.**" for f in top]
            lines += [f"- {cell.run.label}, seed {cell.seed}: {line}" for line in below]
    return flags, lines


def canary_lines(plan: Plan) -> list[str]:
    """The undefended canary of each data set and arch (studies.plan.CANARY, eval/sanity.py check 8):
    does this scale's PGD break a model with no defence? Put at the top of every attack table."""
    out = []
    for cell in plan.canaries:
        c = (sanity_report(cell.run_dir) or {}).get("undefended")
        if not c:
            out.append(f"Canary ({cell.dataset}, {cell.run.arch}): the undefended {cell.run.label} is not "
                       "measured yet.")
            continue
        p = c["params"]
        how = (f"PGD with k = {p['nb_iter']}, ε = {p['eps']:.4g}, η = {p['eps_iter']:.4g} on {c['n_samples']} "
               f"test images leaves the undefended NAT_2 (seed {cell.seed}) {100 * c['robust_accuracy']:.1f} %")
        out.append(f"Canary ({cell.dataset}, {cell.run.arch}): {how}: passes (< {100 * c['max_accuracy']:g} %)."
                   if c["passed"] else
                   f"**Canary fails ({cell.dataset}, {cell.run.arch}): {how} (it must fall below "
                   f"{100 * c['max_accuracy']:g} %). At this scale the attacks cannot rank defences: read "
                   "every robustness number and verdict below as an upper bound from too weak an attack, "
                   "on models that are not trained to convergence.**")
    return out


def masking_flags(plan: Plan, part: Study) -> list[str]:
    """For the top of every table that shows them: the runs whose masking checks break more images the
    white-box cascade left robust than sampling noise explains (eval/sanity.py check 9), each with
    its worst case marked untrustworthy."""
    out = []
    for cell in (c for c in plan.cells if c.study == part.name):
        failed = {name: c for name, c in (sanity_report(cell.run_dir) or {}).get("beyond_cascade", {}).items()
                  if not c["passed"]}
        if failed:
            said = "; ".join(f"{name} breaks {c['beyond_cascade']} of {c['n_samples']} images the white-box cascade "
                             f"left robust (95 % interval from {100 * c['ci'][0]:.1f} %, above {100 * c['tolerance']:g} %)"
                             for name, c in failed.items())
            out.append(f"**{cell.run.label}, seed {cell.seed}: {said}: gradient masking is likely, so its worst "
                       "case (the any-attack row) is untrustworthy.**")
    return out


def sanity_lines(plan: Plan, part: Study) -> list[str]:
    """One Markdown bullet per run and seed of the part whose attack-suite sanity report warns (every
    run of a full_evaluation part, warnings or not): the any-attack row against restarted margin PGD
    (sanity check 6) and every masking warning and failed canary of its report."""
    out = []
    for cell in (c for c in plan.cells if c.study == part.name):
        report = sanity_report(cell.run_dir)
        if not report or not (part.full_evaluation or report.get("warnings")):
            continue
        c = report.get("any_vs_restarts")
        versus = (f"any attack {100 * c['any_attack']:.1f} vs margin PGD with random restarts "
                  f"{100 * c['pgd_margin_restarts']:.1f} on {c['n_samples']} samples; ") if c else ""
        warnings = report.get("warnings", [])
        out.append(f"- {cell.run.label}, seed {cell.seed}: {versus}"
                   + ("; ".join(f"**{w}**" for w in warnings) if warnings else "no masking warning"))
    return out


def _dataset_name(name: str) -> str:
    return DATASET_NAMES.get(name, name)


def heading(plan: Plan, parts: tuple[Study, ...]) -> str:
    """What ran, then the paper object it stands for: "## Fashion-MNIST, CNN (the paper's Table 4 on
    CIFAR-10): Robustness evaluation, standard CNN members"; a study beyond the paper (claims_by
    "package") names no paper object."""
    ran = dict.fromkeys(f"{_dataset_name(c.dataset)}, {ARCH_NAMES.get(c.run.arch, c.run.arch)}"
                        for c in plan.cells if c.study == parts[0].name)
    what = "; ".join(ran) or "Not run at this scale"
    titles = "; ".join(dict.fromkeys(p.title for p in parts))
    if all(p.claims_by == "package" for p in parts):
        return f"## {what}: {titles}"
    theirs = _listed(list(dict.fromkeys(_dataset_name(p.dataset) for p in parts)))
    return f"## {what} (the paper's {_sources(parts)} on {theirs}): {titles}"


def _source(part: Study) -> str:
    return part.source or part.name


def _sources(parts: tuple[Study, ...]) -> str:
    """"Tables 4 and 5" for Table 4 and Table 5; other sources listed as they are."""
    names = [_source(p) for p in parts]
    words = [n.split(" ") for n in names]
    if len(names) > 1 and all(len(w) == 2 and w[0] == words[0][0] for w in words):
        return f"{words[0][0]}s {_listed([w[1] for w in words])}"
    return _listed(names)


def shared_tables(plan: Plan) -> dict[str, tuple[Study, ...]]:
    """Each part's name -> the parts whose table is one with its own, in the plan's order: the first
    shows it. A part joins an earlier part's table when its cells are some of that table's training
    runs (the same run labels in the same run folders for every seed) shown the same way (layout,
    evaluations, full_evaluation and the attacks this scale runs), so that the table has every row
    and column of it: at the Fashion-MNIST scales, Tables 4 and 5, 10a and 10b, 12 and 13; at every
    scale, Fig 3 (CCE-RM_2's entropy detection) in Fig 2's table (CCE-DM_2 and CCE-RM_2). A part
    with no cells at this scale is alone."""
    groups: list[tuple[tuple, frozenset, list[Study]]] = []
    for part in _parts(plan):
        runs = frozenset((c.run.label, c.seed, c.run_dir) for c in plan.cells if c.study == part.name)
        shown = (part.layout, part.evaluations, part.full_evaluation,
                 plan.scale.attacks_for(part.attacks, part.full_evaluation))
        home = next((g for g in groups if runs and g[0] == shown and runs <= g[1]), None)
        if home:
            home[2].append(part)
        else:
            groups.append((shown, runs, [part]))
    return {p.name: tuple(g[2]) for g in groups for p in g[2]}


def _paper_labels(group: tuple[Study, ...]) -> dict[str, Study]:
    """{label: part} of a table of shared runs, for each part's paper numbers: the paper's data set
    where the parts' differ (CIFAR-10, CIFAR-100), else the source, else the study's name."""
    for labels in ([_dataset_name(p.dataset) for p in group], [_source(p) for p in group]):
        if len(set(labels)) == len(group):
            return dict(zip(labels, group))
    return {p.name: p for p in group}


def scale_text(plan: Plan) -> str:
    """"Scale small (**not converged ...**)": the scale every table names, with what it is not."""
    return f"Scale {plan.scale.name}" + (f" (**{plan.scale.caveat}**)" if plan.scale.caveat else "")


def source_line(plan: Plan, group: tuple[Study, ...]) -> str:
    """Under a table's heading: the paper objects it reproduces and the scale it ran at (a page may
    mix studies), our data set beside the paper's, the seeds, and how a cell reads. ``group``: the
    parts the table shows (shared_tables)."""
    shared = ", one table: at this scale their cells are the same training runs" if len(group) > 1 else ""
    head = f"Source: {_sources(group)}{shared}. {scale_text(plan)}"
    ours = sorted({_dataset_name(c.dataset) for c in plan.cells if c.study == group[0].name})
    if not ours:
        return f"{head}: not reproduced at this scale."
    theirs = [_dataset_name(p.dataset) for p in group]
    if set(theirs) == set(ours):
        differs = ""
    elif len(set(theirs)) == 1:
        differs = f", not the paper's {theirs[0]}"
    else:
        differs = f", not the paper's {_listed([f'{d} ({_source(p)})' for d, p in zip(theirs, group)])}"
    paper = ("the paper's value in brackets" if len(group) == 1 else
             f"in brackets the paper's value of each, labelled {_listed(list(_paper_labels(group)))}")
    images = ("test images drawn at random for each seed, the same for every run at that seed" if plan.scale.draw_images
              else "the first n test images, as the paper's protocol fixes them")
    return (f"{head}: runs on {', '.join(ours)}{differs}; seeds {', '.join(map(str, plan.seeds))}; {images}; "
            f"cells: ours, mean ± sd over the seeds (one seed: its 95 % Wilson interval), and {paper}.")


def figures(plan: Plan, part: Study) -> list[tuple[str, str]]:
    """(caption, PNG path) of the figures this part drew for its first seed: the detection figures
    (Figs 2-4) of every run, the black-box heatmaps (Tables 12-13)."""
    from figures import drawing

    seed = plan.seeds[0]
    found = []
    cells = [c for c in plan.cells if c.study == part.name and c.seed == seed]
    for cell in cells:
        for a in _analyses(part):
            for name in getattr(a, "FIGURES", ()):
                path = drawing.figure_path(cell.run_dir, name) + ".png"
                if os.path.isfile(path):
                    found.append((f"{cell.run.label}, seed {seed}: {name.replace('_', ' ')}", path))
    for a in (a for a in _analyses(part) if a.SCOPE == "runs" and len(cells) > 1):
        folder = runs_folder(plan.out_dir, a.NAME, cells[0].dataset, seed, [c.run_dir for c in cells])
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".png"):
                found.append((f"seed {seed}: {name[:-4].replace('_', ' ')}", os.path.join(folder, name)))
    return found
