"""Shared glue of the figure modules: the Agg backend, flags, saving, class names, model symbols and
the choice of the example image of Figs 1 and 5-8.

Usage::

    from figures import common
    fig, ax = common.plt.subplots()
    paths = common.save(fig, run_dir, "roc_attacks")      # RUN/figures/roc_attacks.png and .pdf
    names = common.class_names("fashion_mnist")           # ["T-shirt/top", ...]
    idx, x_adv = common.pick_example(ens, x, y, eps=0.1, eps_iter=0.01, nb_iter=20)
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from cce_tf import cli_flags  # noqa: E402
from cce_tf.cli_flags import UsageError  # noqa: E402
from eval import batches  # noqa: E402
from eval.output import save_figure  # noqa: E402
from eval.progress import quiet_tf  # noqa: E402
from eval.target import check_run_dir  # noqa: E402

__all__ = ["plt", "save", "class_names", "member_symbol", "ensemble_symbol", "pick_example",
           "figure_flags", "run_dirs", "figure_path"]

_CLASS_NAMES = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
}


def class_names(dataset: str, num_classes: int = 100) -> list[str]:
    """Readable class names (CIFAR-100: the class ids)."""
    return _CLASS_NAMES.get(dataset, [str(i) for i in range(num_classes)])


def member_symbol(i: int) -> str:
    """$f^{i+1}$ for the 0-based member i."""
    return f"$f^{{{i + 1}}}$"


def ensemble_symbol() -> str:
    return "$f^{en}$"


def figure_path(run_dir: str, name: str) -> str:
    """RUN/figures/NAME (without extension)."""
    return os.path.join(run_dir, "figures", name)


def save(fig, run_dir: str, name: str) -> list[str]:
    """Saves fig as RUN/figures/NAME.png and .pdf, closes it, returns the two paths."""
    return save_figure(fig, figure_path(run_dir, name))


def show_image(ax, image: np.ndarray) -> None:
    """An HWC image in [0, 1] (gray when it has one channel), without ticks."""
    image = np.clip(np.asarray(image), 0, 1)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def pick_example(ens, x: np.ndarray, y: np.ndarray, eps: float, eps_iter: float, nb_iter: int,
                 index: Optional[int] = None, search: int = 256,
                 batch_size: int = 500) -> tuple[int, np.ndarray]:
    """(index, x_adv of that image) for Figs 1 and 5-8: ``index`` if given, else the first of the
    first ``search`` test images that the ensemble gets right and whose PGD example (against the
    whole ensemble, true labels) fools it; else the first one it gets right; else image 0."""
    if index is not None:
        if not 0 <= index < len(x):
            raise UsageError(f"--index must be in [0, {len(x)}), got {index}")
        sl = slice(index, index + 1)
        return index, batches.craft("pgd", ens, x[sl], y[sl], batch_size, eps=eps,
                                        eps_iter=eps_iter, nb_iter=nb_iter)[0]
    xs, ys = x[:search], y[:search]
    x_adv = batches.craft("pgd", ens, xs, ys, batch_size, eps=eps, eps_iter=eps_iter,
                              nb_iter=nb_iter)
    right = batches.predict_labels(ens, xs, batch_size) == ys
    fooled = batches.predict_labels(ens, x_adv, batch_size) != ys
    for candidates in (np.flatnonzero(right & fooled), np.flatnonzero(right), np.array([0])):
        if candidates.size:
            return int(candidates[0]), x_adv[int(candidates[0])]
    raise AssertionError("unreachable")


def attack_defaults(dataset: str, eps: Optional[float], eps_iter: Optional[float]) -> tuple[float, float]:
    """(ε, η) of the data set's PGD (Table 6's setting) unless given; UsageError if η > ε."""
    from eval.transferability import attack_params

    p = attack_params(dataset, eps, eps_iter)
    return p["eps"], p["eps_iter"]


# --------------------------------------------------------------------------------------------------
# Flags shared by the figure CLIs
# --------------------------------------------------------------------------------------------------

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
    """The flags of a figure drawn from eval.detection results."""
    return figure_flags("n_samples", *ATTACK_FLAGS, "force", "verbose")


def detection_figure_cli(make, fv: flags.FlagValues, argv: Optional[list[str]] = None) -> int:
    """The CLI of a figure drawn from eval.detection results: make(run_dir, n_samples, batch_size,
    seed, eps, eps_iter, nb_iter, force, verbose) -> paths, per --run_dir."""
    def main(argv):
        for run_dir in run_dirs(fv, argv):
            paths = make(run_dir, fv.n_samples, fv.batch_size, fv.seed, fv.eps, fv.eps_iter, fv.nb_iter,
                         fv.force, verbose=fv.verbose)
            print("wrote " + ", ".join(paths))

    return cli_flags.run(main, fv, argv, doc=sys.modules[make.__module__].__doc__)
