"""The forest plot of a results page's main claims (studies/page.py): one line per claim, our 95 %
interval of a − b at every training budget and against every attacker, the paper's a − b as a
marker, zero as the line a claim must clear.

Usage::

    from figures import forest
    lines = [forest.Line("CCE-RM_2 − ADP_2, PGD", paper=2.5,
                         intervals=(forest.Interval("10 epochs, PGD", 1.1, 0.4, 1.8),))]
    png, pdf = forest.draw(lines, "results/headline/figures/forest")
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from figures.drawing import plt
from eval.output import save_figure


@dataclasses.dataclass(frozen=True)
class Interval:
    """One verdict's mean a − b and its 95 % interval, in percentage points."""
    label: str          # the budget and the attacker, e.g. "20 epochs, worst case"
    diff: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class Line:
    label: str                          # the claim's two sides and what it compares
    intervals: tuple[Interval, ...]
    paper: Optional[float] = None       # the paper's a − b, where it prints both


def draw(lines: list[Line], path_stem: str) -> list[str]:
    """PATH_STEM.png and .pdf: the claims top to bottom, each interval on its own row under its claim
    (one colour per interval label, the same on every claim), the paper's a − b as a red cross."""
    labels = list(dict.fromkeys(i.label for line in lines for i in line.intervals))
    colours = {label: plt.get_cmap("tab10")(k % 10) for k, label in enumerate(labels)}
    step = 1.0 / (len(labels) + 1)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(lines) * max(2, len(labels)) * step * 2))
    for row, line in enumerate(lines):
        y0 = -row
        for i in line.intervals:
            y = y0 - step * (labels.index(i.label) - (len(labels) - 1) / 2)
            ax.errorbar(i.diff, y, xerr=[[i.diff - i.low], [i.high - i.diff]], fmt="o", ms=4, capsize=3,
                        color=colours[i.label], label=i.label)
        if line.paper is not None:
            ax.plot(line.paper, y0, "x", color="red", ms=8, mew=2, label="paper's a − b")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks([-row for row in range(len(lines))], [line.label for line in lines])
    ax.set_xlabel("a − b (percentage points), mean over seeds and 95 % interval")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))   # one entry per label
    ax.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.7 / fig.get_figheight()),
              ncol=len(handles), fontsize=8)   # below the axes: never over an interval
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path_stem)
