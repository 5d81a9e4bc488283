"""Training curves of a run: loss and accuracies per epoch, from RUN/history.json (written by
``python -m cce_tf.train``).

Usage::

    python -m figures.training_curves --run_dir runs/cce_rm

Left: the training loss (the method's objective) and the clean test loss; right: clean training
accuracy, training accuracy on the training adversary's examples (adv_acc, where the method has
one) and clean test accuracy; the learning rate on a second axis. Writes
RUN/figures/training_curves.png and .pdf.
"""
from __future__ import annotations

import sys
from typing import Optional

from matplotlib.ticker import MaxNLocator

from cce_tf import cli_flags
from cce_tf.cli_flags import UsageError
from eval.labels import run_label
from eval.target import history as read_history_file, history_path, read_run_config
from figures import drawing, figure_cli

NAME = "training_curves"
XLABEL = "Epoch"
LOSS_KEYS = {"loss": "training loss (objective)", "val_loss": "test loss (clean)"}
ACC_KEYS = {"acc": "training accuracy (clean)", "adv_acc": "training accuracy (adversarial)",
            "val_acc": "test accuracy (clean)"}


def read_history(run_dir: str) -> list[dict]:
    """RUN/history.json; UsageError if missing or empty."""
    path = history_path(run_dir)
    history = read_history_file(run_dir)
    if not history:
        raise UsageError(f"{path} is missing or empty: it is written by "
                                f"python -m cce_tf.train --out_dir {run_dir} after every epoch")
    return sorted(history, key=lambda h: h["epoch"])


def make(run_dir: str) -> list[str]:
    """Draws the training curves of a run; returns the PNG and PDF paths."""
    cfg = read_run_config(run_dir)
    history = read_history(run_dir)
    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) <= 30 else None
    fig, (ax_loss, ax_acc) = drawing.plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys, name in ((ax_loss, LOSS_KEYS, "Loss"), (ax_acc, ACC_KEYS, "Accuracy")):
        for key, label in keys.items():
            if any(key in h for h in history):
                ax.plot(epochs, [h.get(key) for h in history], marker=marker, label=label)
        ax.set_title(name)
        ax.set_xlabel(XLABEL)
        ax.set_ylabel(name)
    ax_loss.legend(fontsize=8)
    ax_acc.set_ylim(0, 1)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any("learning_rate" in h for h in history):
        ax_lr = ax_acc.twinx()
        ax_lr.plot(epochs, [h.get("learning_rate") for h in history], color="gray", ls=":",
                   label="learning rate")
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("Learning rate", color="gray")
        lines = ax_acc.get_legend_handles_labels()
        lr_lines = ax_lr.get_legend_handles_labels()
        ax_acc.legend(lines[0] + lr_lines[0], lines[1] + lr_lines[1], fontsize=8, loc="best")
    else:
        ax_acc.legend(fontsize=8, loc="best")
    fig.suptitle(f"Training curves: {run_label(cfg)}_{cfg.get('members', '?')} "
                 f"({cfg.get('dataset')}, {cfg.get('arch')})")
    fig.tight_layout()
    return drawing.save(fig, run_dir, NAME)


FLAGS = figure_cli.figure_flags()


def main(argv: list[str]) -> None:
    for run_dir in figure_cli.run_dirs(FLAGS, argv):
        print("wrote " + ", ".join(make(run_dir)))


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m figures.training_curves, cce-figure training_curves)."""
    return cli_flags.run(main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
