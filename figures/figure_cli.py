"""The flags and the main loop shared by the figure CLIs (each figure's module keeps its own
``make`` and ``cli``).

Usage::

    from figures import figure_cli
    FLAGS = figure_cli.figure_flags(*figure_cli.ATTACK_FLAGS)
    for run_dir in figure_cli.run_dirs(FLAGS, argv): ...
"""
from __future__ import annotations

import sys
from typing import Optional

from absl import flags

from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError
from eval.progress import quiet_tf
from eval.target import check_run_dir

# The figures that craft adversarial examples take these shared flags (cce_tf.cli_flags).
ATTACK_FLAGS = ("batch_size", "seed", "eps", "eps_iter", "nb_iter")


def figure_flags(*names: str) -> flags.FlagValues:
    """A figure CLI's FlagValues: --run_dir (the figure of each run goes to RUN/figures/) and the
    shared flags ``names``."""
    fv = cli_flags.new_flags()
    cli_flags.define_shared(fv, "run_dir", *names, **({"nb_iter": 20} if "nb_iter" in names else {}),
                            note={"run_dir": "Each run's figure goes to RUN/figures/."})
    return fv


def run_dirs(fv: flags.FlagValues, argv: list[str]) -> list[str]:
    """Parses ``argv`` into ``fv``; the checked --run_dir folders (UsageError for none, a stray
    argument or a folder that is not a run)."""
    cli_flags.parse(fv, argv)
    if not fv.run_dir:
        raise UsageError("--run_dir is required")
    for run_dir in fv.run_dir:
        check_run_dir(run_dir)
    quiet_tf()
    return list(fv.run_dir)


def detection_figure_flags() -> flags.FlagValues:
    """The flags of a figure drawn from eval.analyses.detection results."""
    return figure_flags("n_samples", *ATTACK_FLAGS, "force", "verbose")


def detection_figure_cli(make, fv: flags.FlagValues, argv: Optional[list[str]] = None) -> int:
    """The CLI of a figure drawn from eval.analyses.detection results: make(run_dir, n_samples, batch_size,
    seed, eps, eps_iter, nb_iter, force, verbose) -> paths, per --run_dir."""
    def main(argv):
        for run_dir in run_dirs(fv, argv):
            paths = make(run_dir, fv.n_samples, fv.batch_size, fv.seed, fv.eps, fv.eps_iter, fv.nb_iter,
                         fv.force, verbose=fv.verbose)
            print("wrote " + ", ".join(paths))

    return cli_flags.run(main, fv, argv, doc=sys.modules[make.__module__].__doc__)
