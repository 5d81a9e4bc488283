"""The console script cce-figure: one command for every figure module, by subcommand.

    cce-figure NAME --run_dir RUN [flags]      # the same as python -m figures.NAME --run_dir RUN ...
    cce-figure --help                          # the figure names
    cce-figure NAME --help                     # that figure's flags

Figures: FIGURES.

Each figure keeps its own module and flags; this only picks the module and hands it the remaining
arguments, so the figures need no shared flag set.
"""
from __future__ import annotations

import importlib
import sys

FIGURES = ("entropy_histogram", "roc_attacks", "roc_eps", "predictions", "loss_surface", "training_curves")


def main() -> None:
    """Dispatch ``cce-figure NAME ...`` to ``figures.NAME.cli`` (exit 2 for an unknown NAME)."""
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "-?", "--help", "--helpshort", "--helpfull"):
        print(__doc__.strip().replace("FIGURES", ", ".join(FIGURES)))
        sys.exit(0 if args else 2)
    name = args[0]
    if name not in FIGURES:
        print(f"error: unknown figure {name!r}: choose one of {', '.join(FIGURES)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(importlib.import_module(f"figures.{name}").cli([f"cce-figure {name}", *args[1:]]))


if __name__ == "__main__":
    main()
