"""How runs and radii are named in tables, figures and results files: the paper's name of a run
(its preset or method, e.g. CCE-RM, ADV-EN; with N: CCE-RM_2), one label per column, and ε as the
paper writes it.

Usage::

    from eval.labels import format_eps, run_label, run_labels
    run_label(cfg)                                   # "CCE-RM"; a model file's name
    run_label(cfg, members=True)                     # "CCE-RM_2", the attack suite's column
    run_labels(run_dirs, configs)                    # one per run, told apart where two share a name
    format_eps(8 / 255, "cifar10")                   # "8/255"

Pure Python: no TensorFlow import.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from cce_tf.cli_flags import UsageError

_METHOD_NAMES = {"nat": "NAT", "adv": "ADV", "adv-en": "ADV-EN", "adp": "ADP", "cce": "CCE"}
_PRESET_NAMES = {"cce-base": "CCE-Base"}


def run_label(cfg: dict, members: bool = False) -> str:
    """The paper's name of a run: its preset (CCE-RM, CCE-DM, CCE-Base) or method (ADV-EN, ...),
    with ``members`` its N appended (CCE-RM_2, as the paper's tables name their columns); a model
    file's name as it is."""
    if cfg.get("label"):
        return cfg["label"]
    preset = cfg.get("preset")
    if preset:
        name = _PRESET_NAMES.get(preset, preset.upper())
    else:
        name = _METHOD_NAMES.get(cfg.get("method", ""), str(cfg.get("method", "run")).upper())
    return f"{name}_{cfg['members']}" if members else name


def run_labels(run_dirs: Sequence[str], configs: Sequence[dict], labels: Optional[Sequence[str]] = None,
               members: bool = False) -> list[str]:
    """One label per run (a table's columns): the given ones, else ``run_label``'s, with N (unless
    ``members`` put it there already) and then the folder name appended where two runs would share
    a name."""
    if labels:
        if len(labels) != len(run_dirs):
            raise UsageError(f"--label given {len(labels)} times for {len(run_dirs)} --run_dir")
        return list(labels)
    names = [run_label(c, members) for c in configs]
    if len(set(names)) < len(names) and not members:
        names = [f"{n}_{c.get('members', '?')}" for n, c in zip(names, configs)]
    if len(set(names)) < len(names):
        names = [f"{n} ({os.path.basename(os.path.normpath(d))})" for n, d in zip(names, run_dirs)]
    return names


def format_eps(eps: float, dataset: str) -> str:
    """ε as the paper writes it: k/255 on CIFAR-10 when it is one, else a short decimal."""
    if dataset == "cifar10":
        k = eps * 255
        if abs(k - round(k)) < 1e-6:
            return f"{int(round(k))}/255"
    return f"{eps:.4g}"
