"""The one reuse rule of every evaluation tool (DESIGN.md, contract 9).

Usage::

    from eval import reuse
    fp = reuse.fingerprint(run_dir)                            # SHA-256 of the run's weights (eval.target)
    d = reuse.decide(old_entry, fp, settings, force=False)
    if d.reuse: ...                                            # same weights and same settings
    else: entry = dict(compute(), **reuse.stamp(settings, fp))
    for line in reuse.explain("eval/attack_suite.json", {"pgd": d, ...}): print(line)

A result is reused only when it was computed on the very weights the run holds now (the SHA-256 of
ensemble.weights.h5; for a model file evaluated in place of a run, of that file) AND with the same
settings; ``--force`` recomputes it anyway. Every tool has the same ``--force`` flag with this meaning. A result file whose weights are gone is kept under
RUN/eval/stale/ (``keep_stale``) before its file is rewritten for the new weights, so no finished
work is lost, and no table or figure can mix the two.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Mapping, Optional, Union

from eval.output import jsonable
from eval.target import fingerprint  # noqa: F401 - reuse.fingerprint: every tool's name for it

KEY = "weights_sha256"

NEW = "no result yet"
FORCED = "--force"
WEIGHTS = "weights changed"
SETTINGS = "settings changed"
UNSTAMPED = "no weights fingerprint recorded"


@dataclasses.dataclass(frozen=True)
class Decision:
    reuse: bool
    why: str = ""  # why not: NEW, FORCED, WEIGHTS, SETTINGS or UNSTAMPED


def canonical(settings: Any) -> Any:
    """``settings`` as the results files give it back (tuples -> lists, numpy scalars -> Python,
    floats rounded as eval.output.write_json rounds them), so stored and fresh settings compare
    equal: 0.1 / 8 is 0.0125 on both sides."""
    return json.loads(json.dumps(jsonable(settings), sort_keys=True, default=str))


Fingerprint = Union[str, list]  # one run's SHA-256, or one per run for results across runs


def stamp(settings: Mapping, fp: Fingerprint) -> dict:
    """The keys a result stores so ``decide`` can recognise it later."""
    return {KEY: canonical(fp), "settings": canonical(dict(settings))}


def decide(entry: Optional[Mapping], fp: Fingerprint, settings: Mapping, force: bool = False) -> Decision:
    """Reuse ``entry`` (a stored result, or None when there is none) only if it was computed on
    weights ``fp`` with ``settings`` and ``force`` is off."""
    if not isinstance(entry, Mapping) or not entry:
        return Decision(False, NEW)
    if force:
        return Decision(False, FORCED)
    if KEY not in entry:
        return Decision(False, UNSTAMPED)
    if entry[KEY] != canonical(fp):
        return Decision(False, WEIGHTS)
    if entry.get("settings") != canonical(dict(settings)):
        return Decision(False, SETTINGS)
    return Decision(True)


def explain(source: str, decisions: Mapping[str, Decision]) -> list[str]:
    """One line per reason a stored result is recomputed, e.g.
    "weights changed since eval/attack_suite.json: recomputing pgd, mim"."""
    by_why: dict[str, list[str]] = {}
    for name, d in decisions.items():
        if not d.reuse and d.why != NEW:
            by_why.setdefault(d.why, []).append(name)
    return [f"{why} since {source}: recomputing {', '.join(names)}" for why, names in by_why.items()]


def same_weights(entries: Mapping[str, Mapping], fp: Fingerprint) -> dict[str, Mapping]:
    """The entries computed on weights ``fp``: what a table or figure may show together."""
    return {k: e for k, e in entries.items() if isinstance(e, Mapping) and e.get(KEY) == fp}


def keep_stale(path: str, old_fp: Optional[str]) -> Optional[str]:
    """Copy a result file computed on other weights to RUN/eval/stale/FP12/NAME before it is
    rewritten; returns the copy's path (None when there is nothing to keep)."""
    if not os.path.isfile(path):
        return None
    folder = os.path.join(os.path.dirname(path), "stale", (old_fp or "unstamped")[:12])
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, os.path.basename(path))
    if not os.path.exists(dest):
        shutil.copy2(path, dest)
    return dest
