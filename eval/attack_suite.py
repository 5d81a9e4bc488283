"""CLI: robust accuracy of trained runs under the paper's attacks (Tables 3-5).

    python -m eval.attack_suite --run_dir RUN                       # the paper's attacks, paper settings
    python -m eval.attack_suite --run_dir runs/adp --run_dir runs/cce   # side by side, one column each
    python -m eval.attack_suite --run_dir RUN --attacks pgd,spsa --n_samples 1000 --nb_iter 20
    python -m eval.attack_suite --run_dir my_model.keras --dataset fashion_mnist   # any classifier

--run_dir also takes a model file in place of a run folder: a .keras file or a TensorFlow
SavedModel folder of any classifier (logits out, [0, 1] NHWC float32 in; e.g. written by
python -m cce_tf.export). Its data set is --dataset, or the one data set its input shape and class
count fit; its results go to the sibling folder PATH.eval/, stamped with the file's SHA-256.

Per run: natural accuracy on the whole test set, then each attack on the first n test samples
(gradient attacks: all of them; SPSA, B&B and AutoAttack: the first 1000, as the paper), in
batches. A sample is robust if the ensemble is right on the clean AND the adversarial input.
Results go to RUN/eval/attack_suite.json (DESIGN.md, contract 7), rewritten atomically after every
finished attack, with the weights' SHA-256 on every entry. A finished attack is reused only when it
was computed on the weights the run holds now with the same params, n_samples and seed (eval.reuse,
the rule of every tool); --force recomputes it. The file only ever describes one set of weights and
one seed: results of others leave it (a copy goes to RUN/eval/stale/). The per-sample robust flags
go beside it (attack_suite_robust.npz): they give the "any attack" row, the per-sample worst case
over the attacks run, and let the SPSA check compare the same samples in a later invocation. Several
invocations may attack one run at once (e.g. --attacks pgd and --attacks mim): each writes under the
results folder's lock (cce_tf.run_lock), reading both files again first, so every finished attack
is kept. Prints a Markdown table shaped like the paper's, with the sanity checks of eval/sanity.py
(gradient masking) that failed as warnings under it.

    from eval.analyses.attack_suite import Options, evaluate      # the library call behind it
    r = evaluate("runs/cce_rm", Options(attacks=("pgd", "mim"), n_samples=1000))


Parts: the flags and ``main`` here; the suite itself is the package eval/analyses/attack_suite/ (plan:
options, what to run and reuse; engine: attacks in seeded batches, bounds checks; store: the results
files; checks: the sanity checks; run: ``evaluate``; report: the table).
"""
from __future__ import annotations

import sys
from typing import Optional

from absl import flags

from attacks.settings import ATTACK_NAMES
from cce_tf import cli_flags
from eval.flags import MODEL_FILE_NOTE, define_dataset_flag
from eval.progress import quiet_tf
from eval.analyses.attack_suite.engine import BoundsError
from eval.analyses.attack_suite.plan import SuiteOptions
from eval.analyses.attack_suite.report import print_report
from eval.analyses.attack_suite.run import evaluate


# The tool's own FlagValues (cce_tf.cli_flags): the flags only fill ``SuiteOptions`` (its
# ``from_flags``); the suite takes its settings as one argument.
FLAGS = cli_flags.new_flags()
cli_flags.define_shared(
    FLAGS, "run_dir", "n_samples", "batch_size", "seed", "eps", "eps_iter", "nb_iter", "force", "verbose",
    "trust_model",
    note={"run_dir": MODEL_FILE_NOTE + " One table column each.",
          "n_samples": "Default: gradient attacks all, SPSA / B&B / AutoAttack the first 1000, as the paper.",
          "eps": "Also moves every radius defined relative to ε (B&B's start radii).",
          "nb_iter": "Of PGD, BIM and MIM (default: the paper's k = 100 / 250; SPSA's 50 steps and the "
                     "multi-targeted k = 20 stay)."})
define_dataset_flag(FLAGS)
cli_flags.define_choice_list(FLAGS, "attacks", None, ATTACK_NAMES,
                             "Comma list of attacks (default: the paper's and PGD on the margin loss, "
                             "attacks.settings.DEFAULT_ATTACKS).")
flags.DEFINE_integer("mul_nb_iter", None, "Override the steps k of the multi-targeted attacks (the "
                     "paper's k = 20).", lower_bound=1, upper_bound=100_000, flag_values=FLAGS)
flags.DEFINE_bool("sanity", True, "Run the gradient-masking sanity checks (eval/sanity.py).",
                  flag_values=FLAGS)


def main(argv: list[str]) -> None:
    """Parse ``argv`` (program name first), evaluate every run, print the table."""
    cli_flags.parse(FLAGS, argv)
    quiet_tf()  # the sanity sweep retraces PGD once per ε, on purpose
    try:
        print_report(evaluate(FLAGS.run_dir, SuiteOptions.from_flags(FLAGS)))
    except BoundsError as e:
        raise BoundsError(f"{e}; this attack's result was not recorded") from None


def cli(argv: Optional[list[str]] = None) -> int:
    """``main`` with exit codes: 0 done, 2 bad input (one line, nothing written), 1 an attack
    returned an x_adv outside its bounds (its result is not recorded; the results before it are)."""
    return cli_flags.run(main, FLAGS, argv, doc=__doc__.split("\nParts")[0], failures=(BoundsError,))


if __name__ == "__main__":
    sys.exit(cli())
