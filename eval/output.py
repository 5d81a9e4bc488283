"""What the evaluation tools write and print: JSON (rounded, atomic), percentages, Markdown tables
and figures.

Usage::

    from eval.output import markdown_table, pct, read_json, save_figure, write_json
    write_json("runs/demo/eval/transferability.json", result)   # numpy values converted, floats rounded
    read_json(path)                                             # None where missing or unreadable
    print(markdown_table(["Model", "acc"], [["CCE-RM", pct(0.455)]]))
    save_figure(fig, "results/blackbox/heatmap")                # .png (150 dpi) and .pdf
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from cce_tf import atomic


def jsonable(obj):
    """obj with numpy values as Python ones, floats rounded to 12 decimals, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return round(v, 12) if np.isfinite(v) else None  # 0.079, not 0.07900000000000001
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: str, obj: dict) -> str:
    """Writes obj (numpy values converted, floats rounded, NaN as null: ``jsonable``) atomically
    (cce_tf.atomic); returns the path."""
    return atomic.write_json(path, jsonable(obj), newline=True)


def read_json(path: str) -> Optional[dict]:
    """The JSON in path, or None where it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pct(value: Optional[float], digits: int = 1) -> str:
    """A fraction as a percentage for printed tables; "–" for a missing value."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: bool = False) -> str:
    """A Markdown table; ``numeric``: every column but the first right-aligned (tables of numbers)."""
    head = "| " + " | ".join(str(h) for h in headers) + " |"
    rule = ("|---|" + "---:|" * (len(headers) - 1)) if numeric else \
        "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def save_figure(fig, path_stem: str) -> list[str]:
    """Saves a matplotlib figure as PATH_STEM.png (150 dpi) and PATH_STEM.pdf; closes it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    paths = [f"{path_stem}.png", f"{path_stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths
