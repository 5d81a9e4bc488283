"""Fig 3: ROC of adversarial detection by the entropy of the ensemble prediction under PGD, BIM and
MIM (k = 20, CIFAR-10 ε = 8/255, η = 1/255; elsewhere η = ε/8), AUC in the legend.

Usage::

    python -m figures.roc_attacks --run_dir runs/cce_rm [--n_samples 1000]

Reads the ROC points of RUN/eval/detection.json (``python -m eval.analyses.detection``); where attacks are
missing it runs that part of the evaluation first. Positives: adversarial examples that fool the
ensemble; negatives: clean images it classifies correctly. Writes RUN/figures/roc_attacks.png and
.pdf.
"""
from __future__ import annotations

import sys
from typing import Optional


from eval.analyses import detection
from eval.labels import format_eps
from figures import drawing, figure_cli

NAME = "roc_attacks"
XLABEL = "False Positive Rate"
YLABEL = "True Positive Rate"


def title(label: str) -> str:
    return f"ROC of {label} under multiple types of attack"


def draw_roc(ax, curves, chance: bool = True) -> None:
    """curves: (legend label, detection metrics dict, colour) triples; a curve without positives
    is listed in the legend only."""
    for name, m, color in curves:
        if m.get("auc") is None:
            ax.plot([], [], color=color, label=f"{name} (no successful attack)")
            continue
        ax.plot(m["fpr"], m["tpr"], color=color, lw=1.8, label=f"{name} (AUC = {m['auc']:.3f})")
    if chance:
        ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="Chance (AUC = 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(YLABEL)
    ax.legend(loc="lower right", fontsize=8)


def make(run_dir: str, n_samples: Optional[int] = None, batch_size: int = 500, seed: int = 0,
         eps: Optional[float] = None, eps_iter: Optional[float] = None,
         nb_iter: int = 20, force: bool = False, verbose: int = 1, draw: Optional[int] = None) -> list[str]:
    """Draws Fig 3 for a run; returns the PNG and PDF paths. ``draw``: the test images'
    draw of its detection results (eval.batches.draw_order)."""
    result = detection.evaluate(run_dir, detection.Options(
        attacks=detection.ATTACKS, sweep=False, n_samples=n_samples, batch_size=batch_size, seed=seed, eps=eps,
        eps_iter=eps_iter, nb_iter=nb_iter, force=force, verbose=verbose, draw=draw))
    ds = result["dataset"]
    colors = {"pgd": "tab:blue", "bim": "tab:orange", "mim": "tab:green"}
    curves = [(n.upper(), result["attacks"][n], colors[n]) for n in detection.ATTACKS]
    m = result["attacks"]["pgd"]
    fig, ax = drawing.plt.subplots(figsize=(5.5, 5))
    draw_roc(ax, curves)
    ax.set_title(f"{title(result['label'])}\n(k = {m['nb_iter']}, ε = "
                 f"{format_eps(m['eps'], ds)}, η = "
                 f"{format_eps(m['eps_iter'], ds)}, {ds})", fontsize=10)
    return drawing.save(fig, run_dir, NAME)


FLAGS = figure_cli.detection_figure_flags()


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m figures.roc_attacks, cce-figure roc_attacks)."""
    return figure_cli.detection_figure_cli(make, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
