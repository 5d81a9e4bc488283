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

from eval import common as eval_common  # noqa: E402

__all__ = ["plt", "save", "class_names", "member_symbol", "ensemble_symbol", "pick_example",
           "define_run_flags", "figure_path"]

UsageError = eval_common.UsageError
cli = eval_common.cli
run_cli = eval_common.run_cli

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
    return eval_common.save_figure(fig, figure_path(run_dir, name))


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
        return index, eval_common.craft("pgd", ens, x[sl], y[sl], batch_size, eps=eps,
                                        eps_iter=eps_iter, nb_iter=nb_iter)[0]
    xs, ys = x[:search], y[:search]
    x_adv = eval_common.craft("pgd", ens, xs, ys, batch_size, eps=eps, eps_iter=eps_iter,
                              nb_iter=nb_iter)
    right = eval_common.predict(ens, xs, batch_size).argmax(-1) == ys
    fooled = eval_common.predict(ens, x_adv, batch_size).argmax(-1) != ys
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

FLAGS = flags.FLAGS


def define_run_flags(attack: bool = True) -> None:
    """--run_dir, --n_samples, --batch_size, --seed and (attack) --eps, --eps_iter, --nb_iter."""
    flags.DEFINE_string("run_dir", None, "A trained run; the figure goes to RUN/figures/.")
    flags.DEFINE_integer("batch_size", 500, "Attack / prediction batch size.", **eval_common.BOUNDS["batch_size"])
    flags.DEFINE_integer("seed", 0, "Seed of PGD's random start (and of random directions).",
                         **eval_common.BOUNDS["seed"])
    if attack:
        flags.DEFINE_integer("n_samples", 0, "Test samples when results must be computed (0: all).",
                             **eval_common.BOUNDS["n_samples"])
        flags.DEFINE_string("eps", None, "Attack radius (default per data set).")
        flags.DEFINE_string("eps_iter", None, "Attack step size (default per data set).")
        flags.DEFINE_integer("nb_iter", 20, "Attack steps k.", **eval_common.BOUNDS["nb_iter"])


def check_args(argv) -> str:
    """The checked --run_dir; UsageError for stray arguments or a folder that is not a run."""
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    eval_common.check_run_dir(FLAGS.run_dir)
    if getattr(FLAGS, "n_samples", 0) < 0 or FLAGS.batch_size < 1:
        raise UsageError("--n_samples must be >= 0 and --batch_size >= 1")
    eval_common.quiet_tf()
    return FLAGS.run_dir


def opt_number(text: Optional[str], name: str) -> Optional[float]:
    return None if text is None else eval_common.parse_number(text, name)


def detection_figure_cli(make) -> None:
    """The CLI of a figure drawn from eval.detection results: make(run_dir, n_samples, batch_size,
    seed, eps, eps_iter, nb_iter, force) -> paths."""
    def main(argv):
        run_dir = check_args(argv)
        paths = make(run_dir, FLAGS.n_samples or None, FLAGS.batch_size, FLAGS.seed,
                     opt_number(FLAGS.eps, "--eps"), opt_number(FLAGS.eps_iter, "--eps_iter"), FLAGS.nb_iter,
                     FLAGS.force)
        print("wrote " + ", ".join(paths))

    define_run_flags()
    eval_common.define_force_flag()
    run_cli(main, doc=sys.modules[make.__module__].__doc__)
