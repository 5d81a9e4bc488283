"""Fig 4: ROC of adversarial detection by the entropy of the ensemble prediction under PGD of
several strengths (k = 20, η fixed at the detection step, ε = ε_dataset × {1,2,4,8,12,16,20,24}/8;
CIFAR-10: ε = 1/255 ... 24/255, η = 1/255), AUC in the legend.

Usage::

    python -m figures.roc_eps --run_dir runs/cce_rm [--n_samples 1000]

Reads the ε sweep of RUN/eval/detection.json (``python -m eval.analyses.detection``); where it is missing it
runs the sweep first. Writes RUN/figures/roc_eps.png and .pdf.
"""
from __future__ import annotations

import sys
from typing import Optional


from eval.analyses import detection
from eval.labels import format_eps
from figures import drawing, figure_cli
from figures.roc_attacks import draw_roc

NAME = "roc_eps"


def title(label: str) -> str:
    return f"ROC of {label} under multiple attack strengths"


def make(run_dir: str, n_samples: Optional[int] = None, batch_size: int = 500, seed: int = 0,
         eps: Optional[float] = None, eps_iter: Optional[float] = None,
         nb_iter: int = 20, force: bool = False, verbose: int = 1, draw: Optional[int] = None) -> list[str]:
    """Draws Fig 4 for a run; returns the PNG and PDF paths. ``draw``: the test images'
    draw of its detection results (eval.batches.draw_order)."""
    result = detection.evaluate(run_dir, detection.Options(
        attacks=(), sweep=True, n_samples=n_samples, batch_size=batch_size, seed=seed, eps=eps, eps_iter=eps_iter,
        nb_iter=nb_iter, force=force, verbose=verbose, draw=draw))
    ds = result["dataset"]
    sweep = result["eps_sweep"]
    cmap = drawing.plt.get_cmap("viridis")
    curves = [(f"ε = {format_eps(m['eps'], ds)}", m,
               cmap(i / max(1, len(sweep) - 1))) for i, m in enumerate(sweep)]
    fig, ax = drawing.plt.subplots(figsize=(5.5, 5))
    draw_roc(ax, curves)
    ax.set_title(f"{title(result['label'])}\n(PGD, k = {sweep[0]['nb_iter']}, η = "
                 f"{format_eps(sweep[0]['eps_iter'], ds)}, {ds})", fontsize=10)
    return drawing.save(fig, run_dir, NAME)


FLAGS = figure_cli.detection_figure_flags()


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m figures.roc_eps, cce-figure roc_eps)."""
    return figure_cli.detection_figure_cli(make, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
