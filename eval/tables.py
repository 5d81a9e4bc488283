"""CLI: a robustness table in the layout of the paper's Tables 3-5, from finished attack-suite results.

    python -m eval.tables --run_dir runs/adv-en --run_dir runs/adp --run_dir runs/cce-rm

Reads RUN/eval/attack_suite.json of each run (written by python -m eval.attack_suite); runs no
attack. Prints the Table 3-5 shaped Markdown table (rows: natural accuracy, then the attacks;
columns: the runs) and the samples behind each cell. The paper's numbers are shown by
python -m studies.reproduce --study table4 (they live in studies/specs/, their one home).
"""
from __future__ import annotations

import sys

from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError
from cce_tf.run_files import WEIGHTS_FILE
from eval import reuse
from eval.labels import run_labels
from eval.analyses.attack_suite.report import paper_table, samples_text
from eval.analyses.attack_suite.store import RESULTS_FILE, read_results
from eval.target import eval_path, read_run_config

FLAGS = cli_flags.new_flags()
cli_flags.define_shared(FLAGS, "run_dir", note={"run_dir": "Each with eval/attack_suite.json: one column each."})


def column(run_dir: str) -> tuple[dict, dict, dict]:
    """(config, summary for eval.analyses.attack_suite.report.paper_table, attack -> n_samples) of one finished
    run. Only results computed on the weights the run holds now are shown (eval.reuse): a table
    never mixes two sets of weights."""
    config = read_run_config(run_dir)
    path = eval_path(run_dir, RESULTS_FILE)
    res = read_results(run_dir)
    if not res:
        raise UsageError(f"{path} not found: run python -m eval.attack_suite --run_dir {run_dir}")
    fp = reuse.fingerprint(run_dir)
    if res.get(reuse.KEY) != fp:
        raise UsageError(f"{path} was computed on other weights than {run_dir}/{WEIGHTS_FILE} holds "
                         f"now: re-run python -m eval.attack_suite --run_dir {run_dir}")
    entries = res.get("attacks", {})
    finished = reuse.same_weights(entries, fp)
    shown = {n: e for n, e in entries.items() if n in finished or "skipped" in e}
    worst = res.get("any_attack")
    summary = {"natural_accuracy": res["natural_accuracy"], "n_test": res.get("n_test"),
               "n_samples": {n: e.get("n_samples") for n, e in shown.items()},
               "attacks": {n: e.get("robust_accuracy", "skipped") for n, e in shown.items()},
               "params": {n: e["params"] for n, e in shown.items() if "params" in e},
               "stages": {n: e["stages"] for n, e in shown.items() if n in finished and "stages" in e},
               "any_attack": worst if worst and set(worst["attacks"]) <= set(finished) else None}
    return config, summary, {n: e.get("n_samples") for n, e in shown.items()}


def main(argv: list[str]) -> int:
    cli_flags.parse(FLAGS, argv)
    if not FLAGS.run_dir:
        raise UsageError("give at least one --run_dir")
    columns = [column(r) for r in FLAGS.run_dir]
    headers = run_labels(FLAGS.run_dir, [config for config, _, _ in columns], members=True)
    print(paper_table([(h, s) for h, (_, s, _) in zip(headers, columns)]))
    print()
    for header, (_, _, n_samples) in zip(headers, columns):
        print(f"{header}: {samples_text(n_samples)}")  # skipped attacks attacked nothing: left out
    return 0


def cli(argv: list[str] | None = None) -> int:
    """The command line (python -m eval.tables, console script cce-tables)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
