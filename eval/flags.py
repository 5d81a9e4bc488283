"""The flags and input checks the evaluation CLIs share beyond cce_tf.cli_flags: --dataset for a
model file, the analyses' common FlagValues, the ε / η checks and the data set's attack settings
(each raises UsageError: one line, exit code 2, through cce_tf.cli_flags.run).

Usage::

    from eval.flags import analysis_flags, check_pgd, dataset_settings
    FLAGS = analysis_flags("Where the side-by-side table goes.", model_files=True)
    s = dataset_settings("cifar10")          # attacks.settings.AttackSettings: eps, eps_iter, ...
    check_pgd([s.eps], s.eps_iter, 20)       # UsageError unless 0 < η <= ε <= 1 and k >= 1

Pure Python: no TensorFlow import, so a CLI rejects bad input in a fraction of a second.
"""
from __future__ import annotations

from typing import Optional, Sequence

from attacks.settings import AttackSettings, for_dataset
from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError

MODEL_FILE_NOTE = "Also a .keras file or SavedModel folder of any classifier (logits out, [0, 1] NHWC in)."


def check_pgd(eps_values: Sequence[float], eps_iter: float, nb_iter: int) -> None:
    """UsageError unless every ε is in (0, 1] (pixel units), 0 < η <= ε (cleverhans' PGD asserts
    it) and k >= 1."""
    check_radius(eps_iter, "--eps_iter")
    for e in eps_values:
        check_radius(e, "--eps")
        if eps_iter > e:
            raise UsageError(f"--eps_iter {eps_iter:g} must not exceed --eps {e:g} "
                             "(cleverhans' PGD requires eta <= eps)")
    if int(nb_iter) < 1:
        raise UsageError(f"--nb_iter must be >= 1, got {nb_iter}")


def check_radius(value: Optional[float], name: str) -> None:
    """UsageError unless ``value`` (a radius or step in [0, 1] pixel units) is in (0, 1]."""
    if value is not None and not 0 < value <= 1:
        raise UsageError(f"{name} must be in (0, 1] (pixel units), got {value}")


def dataset_settings(dataset: str) -> AttackSettings:
    """The paper's evaluation attacks on ``dataset`` (attacks.settings.for_dataset, their one
    home); UsageError for a data set without settings."""
    try:
        return for_dataset(dataset)
    except ValueError as e:
        raise UsageError(str(e)) from None


def define_dataset_flag(fv) -> None:
    """--dataset: the data set of a model file given as --run_dir (eval.target.Target)."""
    from absl import flags

    from cce_tf.data import DATASETS

    flags.DEFINE_enum("dataset", None, DATASETS, "The data set of a model file given as --run_dir (default: "
                      "the one its input shape and class count fit); a run folder's must match.", flag_values=fv)


def analysis_flags(out_help: Optional[str] = None, model_files: bool = False):
    """The FlagValues of an analysis CLI (transferability, black box, detection), with the shared
    flags they all take (cce_tf.cli_flags), --label and, given ``out_help``, --out_dir; with
    ``model_files``, --dataset and --trust_model for a model file in place of a run. Each tool adds
    --eps / --eps_iter with its own note on their defaults."""
    from absl import flags

    fv = cli_flags.new_flags()
    note = {"n_samples": "Default: the whole test set.", **({"run_dir": MODEL_FILE_NOTE} if model_files else {})}
    cli_flags.define_shared(fv, "run_dir", "n_samples", "batch_size", "seed", "nb_iter", "force", "verbose",
                            nb_iter=20, note=note)
    flags.DEFINE_multi_string("label", [], "Label per --run_dir (default: the run's method).", flag_values=fv)
    if model_files:
        define_dataset_flag(fv)
        cli_flags.define_shared(fv, "trust_model")
    if out_help:
        flags.DEFINE_string("out_dir", "results", out_help, flag_values=fv)
    return fv
