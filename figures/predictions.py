"""Figs 1 and 5: a benign test image (top row) and its adversarial example (bottom row), each
followed by the class probabilities of every member f^1 .. f^N and of the ensemble f^en.

Usage::

    python -m figures.predictions --run_dir runs/cce_dm [--index 7]

The adversarial example is PGD against the whole ensemble with the true label (the data set's
Table 6 setting, k = 20; CIFAR-10 ε = 8/255, η = 2/255). Without --index the image is the first
test image the ensemble classifies correctly and whose PGD example fools it (else the first one it
gets right). Writes RUN/figures/predictions.png and .pdf.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np
from absl import flags

from cce_tf import cli_flags
from eval import batches
from eval.labels import format_eps, run_label
from eval.target import load_run_checked
from figures import drawing, example, figure_cli

NAME = "predictions"
YLABEL = "Probability"
ROW_LABELS = ("Benign", "Adversarial")


def make(run_dir: str, index: Optional[int] = None, batch_size: int = 500, seed: int = 0,
         eps: Optional[float] = None, eps_iter: Optional[float] = None,
         nb_iter: int = 20) -> list[str]:
    """Draws Figs 1 / 5 for a run; returns the PNG and PDF paths."""
    ens, cfg = load_run_checked(run_dir)
    ds = cfg["dataset"]
    eps, eps_iter = example.attack_defaults(ds, eps, eps_iter)
    x, y = batches.test_samples(ds)
    batches.seed_everything(seed)
    index, x_adv = example.pick_example(ens, x, y, eps, eps_iter, nb_iter, index,
                                       batch_size=batch_size)
    images = np.stack([x[index], x_adv])
    probs_members = batches.softmax(batches.member_logits(ens, images))   # [N, 2, C]
    probs_en = batches.softmax(batches.logits(ens, images))                 # [2, C]
    n = len(ens.members)
    num_classes = probs_en.shape[-1]
    names = drawing.class_names(ds, num_classes)
    label = run_label(cfg)
    true = int(y[index])

    cols = n + 2
    fig, axes = drawing.plt.subplots(2, cols, figsize=(2.0 + 2.6 * (n + 1), 5.6),
                                    gridspec_kw={"width_ratios": [1.0] + [1.5] * (n + 1)},
                                    squeeze=False)
    symbols = [drawing.member_symbol(i) for i in range(n)] + [drawing.ensemble_symbol()]
    for row in range(2):
        drawing.show_image(axes[row, 0], images[row])
        axes[row, 0].set_ylabel(ROW_LABELS[row], fontsize=11)
        if row == 0:
            axes[row, 0].set_title(f"true: {names[true]}", fontsize=9)
        else:
            axes[row, 0].set_title(f"PGD ε = {format_eps(eps, ds)}", fontsize=9)
        for c in range(n + 1):
            p = probs_members[c, row] if c < n else probs_en[row]
            ax = axes[row, c + 1]
            pred = int(p.argmax())
            colors = ["tab:gray"] * num_classes
            colors[true] = "tab:green"
            if pred != true:
                colors[pred] = "tab:red"
            ax.bar(np.arange(num_classes), p, color=colors)
            ax.set_ylim(0, 1)
            h = float(-(p * np.log(np.clip(p, 1e-30, 1))).sum())
            ax.set_title(f"{symbols[c]}: {names[pred]} ({p[pred]:.2f}), H = {h:.2f}", fontsize=9)
            if num_classes <= 10:
                ax.set_xticks(np.arange(num_classes), names, rotation=90, fontsize=7)
            else:
                ax.set_xlabel("Class", fontsize=8)
            if c == 0:
                ax.set_ylabel(YLABEL)
    fig.suptitle(f"Prediction example: {label} (test image {index}). Top/bottom: benign/adversarial; "
                 f"next columns: outputs of {', '.join(symbols)}\n"
                 "green: true class, red: wrong predicted class", fontsize=10)
    fig.tight_layout()
    return drawing.save(fig, run_dir, NAME)


FLAGS = figure_cli.figure_flags(*figure_cli.ATTACK_FLAGS)
flags.DEFINE_integer("index", None, "Test image to show (default: the first one PGD breaks).", lower_bound=0,
                     flag_values=FLAGS)


def main(argv: list[str]) -> None:
    for run_dir in figure_cli.run_dirs(FLAGS, argv):
        paths = make(run_dir, FLAGS.index, FLAGS.batch_size, FLAGS.seed, FLAGS.eps, FLAGS.eps_iter, FLAGS.nb_iter)
        print("wrote " + ", ".join(paths))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m figures.predictions, cce-figure predictions)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
