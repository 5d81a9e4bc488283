"""Fig 2: histogram of the entropy of the ensemble prediction on clean test images and on their
adversarial examples (PGD against the whole ensemble, the detection setting: k = 20, CIFAR-10
ε = 8/255, η = 1/255; elsewhere η = ε/8).

Usage::

    python -m figures.entropy_histogram --run_dir runs/cce_dm [--n_samples 1000]

Reads RUN/eval/detection.json and detection_entropy.npz (``python -m eval.analyses.detection``); where they
are missing it runs the PGD part of that evaluation first. Writes RUN/figures/entropy_histogram.png
and .pdf.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np

from eval.analyses import detection
from eval.labels import format_eps
from eval.target import read_run_config
from figures import drawing, figure_cli

NAME = "entropy_histogram"
TITLE = "Histogram of prediction entropy"
XLABEL = "Entropy of the ensemble prediction"
YLABEL = "Number of images"


def make(run_dir: str, n_samples: Optional[int] = None, batch_size: int = 500, seed: int = 0,
         eps: Optional[float] = None, eps_iter: Optional[float] = None, nb_iter: int = 20,
         force: bool = False, bins: int = 50, verbose: int = 1, draw: Optional[int] = None) -> list[str]:
    """Draws Fig 2 for a run; returns the PNG and PDF paths. ``draw``: the test images'
    draw of its detection results (eval.batches.draw_order)."""
    result = detection.evaluate(run_dir, detection.Options(
        attacks=("pgd",), sweep=False, n_samples=n_samples, batch_size=batch_size, seed=seed, eps=eps,
        eps_iter=eps_iter, nb_iter=nb_iter, force=force, verbose=verbose, draw=draw))
    h = detection.load_entropies(run_dir)
    clean, adv = h["clean"], h["adv_pgd"]
    cfg = read_run_config(run_dir)
    m = result["attacks"]["pgd"]
    ds = result["dataset"]

    fig, ax = drawing.plt.subplots(figsize=(6, 4))
    top = max(np.log(cfg.get("num_classes", 10)), float(np.max(np.r_[clean, adv])), 1e-3)
    edges = np.linspace(0, top, bins + 1)
    ax.hist(clean, bins=edges, alpha=0.6, color="tab:blue", label=f"Benign (n = {len(clean)})")
    ax.hist(adv, bins=edges, alpha=0.6, color="tab:red",
            label=f"Adversarial, PGD ε = {format_eps(m['eps'], ds)} (n = {len(adv)})")
    ax.set_title(f"{TITLE}: {result['label']}")
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(YLABEL)
    ax.legend()
    return drawing.save(fig, run_dir, NAME)


FLAGS = figure_cli.detection_figure_flags()


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line (python -m figures.entropy_histogram, cce-figure entropy_histogram)."""
    return figure_cli.detection_figure_cli(make, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(cli())
