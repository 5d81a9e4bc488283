"""The attack suite's table, shaped like the paper's Tables 3-5: the paper's row labels, one column
per run, each cell a percentage with its 95 % Wilson interval (eval.stats.wilson_cell, the cell of
the study tables too), and the settings and sanity warnings printed under it.

Usage::

    from eval.analyses.attack_suite import report
    print(report.paper_table(columns))       # columns: [(header, eval.analyses.attack_suite.run's summary), ...]
    report.print_report(columns)             # the table, the samples behind it, the warnings
    report.attack_label("pgd", [100, 250])   # "PGD k = 100/250"
"""
from __future__ import annotations

from typing import Optional, Union

from eval.output import markdown_table

NAT_ROW = "Non-att (Nat. acc.)"
ANY_ROW = "Any attack (per-sample worst case)"
_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "pgd_margin": "PGD (CW margin loss)",
           "pgd_margin_restarts": "PGD (CW margin loss, random restarts)", "bim": "BIM", "mim": "MIM", "mul_pgd": "mul-PGD",
           "mul_bim": "mul-BIM", "mul_mim": "mul-MIM", "spsa": "SPSA", "bb_pgd1": "B&B (wPGD1)",
           "bb_pgd2": "B&B (wPGD2)", "autoattack": "Auto-Attack", "cascade": "Cascade", "apgd-ce": "APGD-CE",
           "apgd-t": "APGD-T"}
_WITH_K = ("pgd", "pgd_margin", "pgd_margin_restarts", "bim", "mim", "mul_pgd", "mul_bim", "mul_mim")

Outcome = Union[float, str, None]  # robust accuracy, "skipped", or None (not available)


def attack_label(name: str, ks: list[int]) -> str:
    """The paper's row label, e.g. "PGD k = 100"; runs with different k show them all: "k = 100/250"."""
    label = _LABELS.get(name, name)
    if name in _WITH_K and ks:
        label += " k = " + "/".join(str(k) for k in sorted(set(ks)))
    return label


def cascade_label(ks: dict[str, int]) -> str:
    """"Cascade of PGD k = 40, …, APGD-T k = 100": its stages in their order, each with its k
    (attacks.cascade.stage_ks)."""
    return "Cascade of " + ", ".join(f"{attack_label(stage, [])} k = {k}" for stage, k in ks.items())


def _cell(value: Outcome, n: Optional[int] = None) -> str:
    """A percentage, with its 95 % Wilson interval when the sample count n is known."""
    from eval import stats  # scipy: imported when a table is drawn, not when the CLI starts

    if isinstance(value, float):
        return stats.wilson_cell(value, n)
    return value or "n/a"


def paper_table(columns: list[tuple[str, dict]]) -> str:
    """Rows: natural accuracy, each attack, then the worst case over the attacks; one column per
    run; percentages, one decimal, each with its 95 % Wilson interval over the samples it counts.

    :param columns: (header, evaluate_run's summary) per run.
    """
    names = list(dict.fromkeys(n for _, s in columns for n in s["attacks"]))
    rows = [[NAT_ROW, *(_cell(s["natural_accuracy"], s.get("n_test")) for _, s in columns)]]
    for name in names:
        ks = [s["params"][name]["nb_iter"] for _, s in columns
              if name in s["params"] and "nb_iter" in s["params"][name]]
        rows.append([_suite_label(name, ks, [s["params"][name] for _, s in columns if name in s["params"]]),
                     *(_cell(s["attacks"].get(name), s.get("n_samples", {}).get(name)) for _, s in columns)])
        subs = list(dict.fromkeys(a for _, s in columns for a in s.get("stages", {}).get(name, {})))
        for sub in subs:  # AutoAttack's robust accuracy after each of its sub-attacks
            rows.append([f"&nbsp;&nbsp;after {sub.upper()}",
                         *(_cell(s.get("stages", {}).get(name, {}).get(sub), s.get("n_samples", {}).get(name))
                           for _, s in columns)])
    if any(s.get("any_attack") for _, s in columns):
        rows.append([f"**{ANY_ROW}**",
                     *(f"{_cell(s['any_attack']['robust_accuracy'], s['any_attack']['n_samples'])} "
                       f"(n = {s['any_attack']['n_samples']})" if s.get("any_attack") else "n/a"
                       for _, s in columns)])
    return markdown_table(["Attack", *(h for h, _ in columns)], rows, numeric=True)


def _suite_label(name: str, ks: list[int], params: list[dict]) -> str:
    if name == "cascade" and params:   # the first column's stages (every run of a table shares them)
        from attacks.cascade import stage_ks
        return cascade_label(stage_ks(params[0]["nb_iter"], params[0]["mul_nb_iter"]))
    return attack_label(name, ks)


def samples_text(n_samples: dict[str, Optional[int]]) -> str:
    """"1000 samples: pgd, mim; 10000 samples: fgsm": the samples behind each attack's cell
    (attacks without a count, the skipped ones, left out)."""
    by_n: dict[int, list[str]] = {}
    for name, n in n_samples.items():
        if n is not None:
            by_n.setdefault(n, []).append(name)
    return "; ".join(f"{n} samples: {', '.join(names)}" for n, names in by_n.items())


def print_report(columns: list[tuple[str, dict]]) -> None:
    """The table, the settings under it, and the failed sanity checks as warnings beside it."""
    print()
    print(paper_table(columns))
    print()
    for header, s in columns:
        eps = sorted({p["eps"] for p in s["params"].values() if "eps" in p})
        print(f"{header}: {s['run_dir']}, eps {'/'.join(f'{e:.4g}' for e in eps)}, {samples_text(s['n_samples'])}")
    for header, s in columns:
        if s.get("any_attack"):
            print(f"{header}: any attack = per-sample worst case over "
                  f"{', '.join(s['any_attack']['attacks'])} on the first {s['any_attack']['n_samples']} samples")
        for w in s["warnings"]:
            print(f"WARNING ({header}, sanity): {w}")
        if s["sanity_ran"] and not s["warnings"]:
            print(f"{header}: sanity checks passed")
