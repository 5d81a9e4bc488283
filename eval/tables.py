"""CLI: the paper's robustness table from finished attack-suite results, beside the paper's numbers.

    python -m eval.tables --run_dir runs/adv-en --run_dir runs/adp --run_dir runs/cce-rm
    python -m eval.tables --run_dir ... --paper table4      # also print the paper's Table 4

Reads RUN/eval/attack_suite.json of each run (written by python -m eval.attack_suite); runs no
attack. Prints the Table 3-5 shaped Markdown table (rows: natural accuracy, then the attacks;
columns: the runs), the samples behind each cell, and with --paper the paper's own table
(percentages as printed in the paper; Tables 3-5 are CIFAR-10 ResNet, CIFAR-10 CNN, CIFAR-100 CNN).
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags

from eval import attack_suite

FLAGS = flags.FlagValues()
flags.DEFINE_multi_string("run_dir", None, "A run with eval/attack_suite.json (repeat: one column each).",
                          flag_values=FLAGS)
flags.DEFINE_enum("paper", None, ["table3", "table4", "table5"], "Also print this table of the paper.",
                  flag_values=FLAGS)

_COLUMNS = ("ADV_1", "ADV-EN_2", "ADP_2", "CCE-RM_2", "ADV-EN_3", "ADP_3", "CCE-RM_3")
# The paper's Tables 3-5 (percent), rows in attack-suite names; None where the paper has no row.
PAPER = {
    "table3": {"natural": (83.9, 85.3, 85.3, 84.5, 86.1, 86.2, 84.9),
               "pgd": (41.4, 42.8, 44.2, 45.8, 43.8, 45.1, 48.6),
               "bim": (41.5, 42.9, 44.1, 45.8, 44.0, 45.2, 48.8),
               "mim": (41.9, 43.3, 44.8, 46.3, 44.5, 45.7, 49.1),
               "bb_pgd1": (37.0, 38.3, 37.3, 42.2, 39.3, 38.3, 44.2),
               "bb_pgd2": (4.9, 2.9, 3.9, 6.0, 4.2, 4.3, 7.1),
               "spsa": (50.0, 53.5, 52.8, 56.2, 53.8, 53.9, 56.6),
               "autoattack": (16.1, 18.5, 17.3, 18.8, 18.4, 17.6, 20.8)},
    "table4": {"natural": (75.7, 76.0, 75.9, 76.0, 76.7, 76.6, 75.7),
               "pgd": (38.0, 39.7, 42.2, 44.7, 40.8, 43.9, 46.8),
               "bim": (38.2, 39.7, 42.2, 44.9, 40.8, 43.8, 46.8),
               "mim": (38.5, 40.5, 42.4, 45.4, 41.3, 44.2, 47.2),
               "mul_pgd": (26.0, 27.7, 27.8, 31.9, 28.3, 32.4, 36.9),
               "mul_bim": (25.9, 27.2, 27.2, 31.6, 27.7, 29.8, 34.1),
               "mul_mim": (26.2, 28.1, 28.3, 32.3, 29.0, 30.7, 34.6),
               "spsa": (40.6, 44.3, 41.5, 45.2, 45.1, 46.1, 47.5),
               "autoattack": (25.1, 25.0, 24.4, 29.9, 25.5, 28.1, 31.9)},
    "table5": {"natural": (40.8, 41.4, 48.0, 53.4, 40.8, 52.6, 54.4),
               "pgd": (26.8, 29.7, 30.9, 35.3, 32.8, 36.2, 39.5),
               "bim": (26.9, 29.1, 31.0, 35.2, 32.8, 36.2, 39.4),
               "mim": (27.0, 29.0, 30.8, 35.3, 32.9, 36.1, 39.6),
               "mul_pgd": (16.4, 15.8, 20.1, 24.2, 16.6, 24.8, 28.4),
               "mul_bim": (15.9, 15.5, 19.4, 23.7, 16.3, 24.5, 28.1),
               "mul_mim": (16.7, 16.1, 20.3, 24.1, 16.8, 25.1, 28.6),
               "spsa": (25.6, 25.5, 24.1, 31.8, 26.0, 32.5, 35.0),
               "autoattack": (15.3, 15.1, 14.8, 21.9, 15.8, 23.0, 25.9)},
}
_PAPER_K = {"table3": 250, "table4": 100, "table5": 100}


def column(run_dir: str) -> tuple[str, dict, dict]:
    """(header, summary for attack_suite.markdown_table, attack -> n_samples) of one finished run."""
    path = os.path.join(run_dir, "eval", attack_suite.RESULTS_FILE)
    if not os.path.exists(path):
        raise attack_suite.UsageError(f"{path} not found: run python -m eval.attack_suite --run_dir {run_dir}")
    with open(path) as f:
        res = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        header = attack_suite.run_header(json.load(f))
    attacks = res.get("attacks", {})
    summary = {"natural_accuracy": res["natural_accuracy"],
               "attacks": {n: e.get("robust_accuracy", "skipped") for n, e in attacks.items()},
               "params": {n: e["params"] for n, e in attacks.items() if "params" in e}}
    return header, summary, {n: e.get("n_samples") for n, e in attacks.items()}


def paper_table(name: str) -> str:
    rows = PAPER[name]
    lines = ["| Attack | " + " | ".join(_COLUMNS) + " |", "|---|" + "---:|" * len(_COLUMNS)]
    for attack, values in rows.items():
        k = [_PAPER_K[name] if not attack.startswith("mul") else 20]
        label = attack_suite.NAT_ROW if attack == "natural" else attack_suite.attack_label(attack, k)
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        FLAGS(argv)
        if not FLAGS.run_dir:
            raise attack_suite.UsageError("give at least one --run_dir")
        columns = [column(r) for r in FLAGS.run_dir]
    except (attack_suite.UsageError, flags.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(attack_suite.markdown_table([(h, s) for h, s, _ in columns]))
    print()
    for header, _, n_samples in columns:
        by_n: dict = {}
        for attack, n in n_samples.items():
            if n is not None:  # skipped attacks attacked nothing
                by_n.setdefault(n, []).append(attack)
        print(f"{header}: " + "; ".join(f"{n} samples: {', '.join(a)}" for n, a in by_n.items()))
    if FLAGS.paper:
        print(f"\nThe paper's {FLAGS.paper.replace('table', 'Table ')} (percent):\n")
        print(paper_table(FLAGS.paper))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
