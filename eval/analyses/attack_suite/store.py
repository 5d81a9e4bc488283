"""The attack suite's files, and the only code that reads or writes them: RUN/eval/attack_suite.json
(DESIGN.md, contract 7), the per-sample robust flags beside it (attack_suite_robust.npz: for each
set of flags NAME, NAME__key holds the weights and settings they belong to), the kept adversarial
examples (adversarial/NAME.npz) and the copies of results of other weights (stale/, eval.reuse).
A model file's go to PATH.eval/ (eval.target). Every write is atomic (cce_tf.atomic).

Usage::

    from eval.analyses.attack_suite import store
    store.read_results("runs/cce_rm")             # attack_suite.json's dict, {} if none
    store.read_masks("runs/cce_rm")               # every array of the npz, signatures included
    store.masks_on("runs/cce_rm", fp)             # {name: flags} of the weights fp only
    files = store.SuiteFiles(target, seed, correct, existing, summarise)
    files.record("pgd", entry, mask, settings)    # this invocation's result, in memory
    files.save()                                  # merged with what is on disk, under the lock

Several invocations may attack one run at once (e.g. --attacks pgd and --attacks mim): each writes
under the results folder's lock (cce_tf.run_lock), reading both files again first (``adopt``), so
every finished attack is kept. The files only ever describe one set of weights and one seed
(``entries_on``): the results of others leave them, after a copy is kept under stale/.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional

import numpy as np

from cce_tf.cli_flags import UsageError
from eval import results_file, reuse
from eval.target import Target, results_dir

RESULTS_FILE = "attack_suite.json"
MASKS_FILE = "attack_suite_robust.npz"
ADVERSARIAL_DIR = "adversarial"   # RUN/eval/adversarial/NAME.npz: x_adv of the attacks in SAVE_ADV
# The attacks whose x_adv are kept: AutoAttack takes the longest to re-run, and its examples are
# what users re-check or transfer. The others recompute in seconds to minutes.
SAVE_ADV = ("autoattack",)
# RUN/eval/attack_suite.NAME.batches.json: the finished batches of an attack still running (the
# cascade on 1,000 images is two batches of 12-23 min each on a core of its own), removed once its
# flags are recorded.
BATCHES_FILE = "attack_suite.{}.batches.json"
NATURAL = "natural"  # the key of the clean-correctness flags in MASKS_FILE
RESTARTS_MASK = "sanity_pgd_margin_restarts"   # sanity check 6's flags in MASKS_FILE (not a table row)
SIGNATURE = "__key"  # NAME + SIGNATURE: the weights and settings of the flags NAME


def signature(settings: dict, fp: str) -> str:
    """What a set of flags belongs to, as stored beside it: eval.reuse's stamp, as JSON."""
    return json.dumps(reuse.stamp(settings, fp), sort_keys=True)


# --------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------


def read_results(run_dir: str) -> dict:
    """RUN/eval/attack_suite.json, or {} if there is none. Raises UsageError if unreadable."""
    path = os.path.join(results_dir(run_dir), RESULTS_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is unreadable ({e}): move it away to start afresh") from None
    if not isinstance(results, dict) or not isinstance(results.get("attacks", {}), dict):
        raise UsageError(f"{path} is not an attack-suite results file: move it away to start afresh")
    return results


def results_on(run_dir: str, fp: str) -> Optional[dict]:
    """RUN/eval/attack_suite.json if it was written for weights ``fp``; None where it is missing,
    unreadable or of other weights (a table never mixes weights)."""
    try:
        results = read_results(run_dir)
    except UsageError:
        return None
    return results if results.get(reuse.KEY) == fp else None


def read_masks(run_dir: str) -> dict[str, np.ndarray]:
    """Every array of RUN/eval/attack_suite_robust.npz (flags and signatures), {} if missing."""
    path = os.path.join(results_dir(run_dir), MASKS_FILE)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):  # missing or unreadable: the masks are recomputed with their attacks
        return {}


def masks_on(run_dir: str, fp: str) -> dict[str, np.ndarray]:
    """The per-sample flags of RUN/eval/attack_suite_robust.npz that belong to weights ``fp``."""
    masks = read_masks(run_dir)
    out = {}
    for name in [k for k in masks if not k.endswith(SIGNATURE)]:
        try:
            if json.loads(str(masks[name + SIGNATURE]))[reuse.KEY] == fp:
                out[name] = masks[name]
        except (KeyError, ValueError, TypeError):
            continue
    return out


def write_results(run_dir: str, results: dict, masks: dict[str, np.ndarray]) -> None:
    """RUN/eval/attack_suite.json and the per-sample robust flags, each replaced atomically
    (flags first: a flag set names the weights and settings it belongs to, see ``signature``), by
    eval.results_file under the results folder's lock."""
    out = results_dir(run_dir)
    results_file.write(os.path.join(out, RESULTS_FILE), results,
                       arrays={os.path.join(out, MASKS_FILE): (masks, False)}, exact=True)


def write_adversarial(run_dir: str, name: str, y: np.ndarray, robust: np.ndarray, keep: dict,
                      settings: dict, fp: str) -> str:
    """RUN/eval/adversarial/NAME.npz (PATH.eval/adversarial/ for a model file): the x_adv of the
    first len(y) test samples (x itself where the model was already wrong), their test-set indices,
    clean labels, robust flags, the attack's per-sample details (``keep``) and the weights and
    settings they belong to, so they can be re-checked or transferred without re-running the
    attack. Returns the file's absolute path."""
    path = os.path.join(results_dir(run_dir), ADVERSARIAL_DIR, f"{name}.npz")
    arrays = {"indices": np.arange(len(y)), "labels": np.asarray(y), "robust": robust, **keep,
              "key": np.array(signature(settings, fp))}
    results_file.write_arrays(path, arrays)
    return os.path.abspath(path)


class Batches:
    """The finished batches of attack ``name`` (an attack killed half-way resumes at its next batch,
    with the same flags: a batch's seed is its first index's, eval.analyses.attack_suite.engine).
    ``done`` holds those read back for these weights and settings ({} for others, or with force) and
    ``seconds_before`` the time they took; ``add`` records one more, ``discard`` removes the record
    once the attack's flags are stored."""

    def __init__(self, target: Target, name: str, settings: dict, fp: str, force: bool = False):
        self.path = os.path.join(target.results_dir, BATCHES_FILE.format(name))
        self.stamp = reuse.stamp(settings, fp)
        old, decision = results_file.decide(self.path, fp, settings, force)
        old = old if decision.reuse else {"batches": {}, "seconds": {}}
        self.done = {int(start): np.asarray(flags, bool) for start, flags in old["batches"].items()}
        self.seconds = {int(start): s for start, s in old["seconds"].items()}
        self.seconds_before = sum(self.seconds.values())
        self._since = time.time()

    def add(self, start: int, flags: np.ndarray) -> None:
        self.done[start], self.seconds[start] = np.asarray(flags, bool), round(time.time() - self._since, 3)
        self._since = time.time()
        results_file.write(self.path, dict(batches={str(s): f.astype(int).tolist() for s, f in sorted(self.done.items())},
                                           seconds={str(s): t for s, t in sorted(self.seconds.items())}, **self.stamp))

    def discard(self) -> None:
        results_file.discard(self.path)


# --------------------------------------------------------------------------------------------------
# Merging: what the files hold, into this invocation's results
# --------------------------------------------------------------------------------------------------


def mask_for(masks: dict, name: str, settings: dict, fp: str) -> Optional[np.ndarray]:
    """The stored robust flags of attack ``name`` if they belong to these settings and weights."""
    if name in masks and str(masks.get(name + SIGNATURE)) == signature(settings, fp):
        return masks[name]
    return None


def entries_on(attacks: dict, fp: str, seed: int) -> dict[str, dict]:
    """The finished entries of a results file's ``attacks`` computed on weights ``fp`` with
    ``seed``: the only ones that may share the file (and a table) with new results."""
    return {n: e for n, e in reuse.same_weights(attacks, fp).items() if e.get("settings", {}).get("seed") == seed}


def adopt(stored: dict, stored_masks: dict, results: dict, masks: dict[str, np.ndarray], fp: str,
          mine: set[str]) -> None:
    """Take into ``results`` and ``masks`` (this invocation's, with its seed) what the results files
    hold (``stored``, ``stored_masks``; read when the suite starts and again before each write):
    the entries on weights ``fp`` with that seed and their robust flags, but for the attacks in
    ``mine``, computed by this invocation; unless ``mine`` holds "sanity", also the sanity report on
    these weights and sanity check 6's flags (eval.analyses.attack_suite.checks matches them to its settings)."""
    for name, e in entries_on(stored.get("attacks", {}), fp, results["seed"]).items():
        if name in mine:
            continue
        results["attacks"][name] = e
        m = mask_for(stored_masks, name, e["settings"], fp)
        if m is None:  # an entry without its flags: the any-attack row leaves it out
            masks.pop(name, None)
            masks.pop(name + SIGNATURE, None)
        else:
            masks[name], masks[name + SIGNATURE] = m, stored_masks[name + SIGNATURE]
    if "sanity" in mine:
        return
    if stored.get(reuse.KEY) == fp and stored.get("sanity"):
        results["sanity"] = stored["sanity"]
    if RESTARTS_MASK in stored_masks:
        for key in (RESTARTS_MASK, RESTARTS_MASK + SIGNATURE):
            masks[key] = stored_masks[key]


class SuiteFiles:
    """One run's results files as an invocation of the suite holds them: ``results``
    (attack_suite.json's dict), ``masks`` (the flags and their signatures) and ``mine`` (the attacks,
    and "sanity", it computed itself: these win when the files are merged in).

    Opening keeps of ``existing`` (the file as the suite found it) the entries on these weights
    and this seed, with their flags, and the clean-correctness flags ``correct``; a file with
    results of other weights or another seed is copied to stale/ first. ``summarise(results,
    masks)`` fills what depends on the whole merged file (the any-attack row, the canaries) before
    every write."""

    def __init__(self, target: Target, seed: int, correct: np.ndarray, existing: dict,
                 summarise: Callable[[dict, dict], None]):
        self.run_dir, self.results_dir, self.fp = target.path, target.results_dir, target.fingerprint
        self.path = os.path.join(self.results_dir, RESULTS_FILE)
        self.summarise = summarise
        self._keep_stale(existing, seed)
        self.results = {"run_dir": self.run_dir, "dataset": target.config["dataset"], "seed": seed,
                        reuse.KEY: self.fp, "natural_accuracy": float(np.mean(correct)), "n_test": int(len(correct)),
                        "attacks": {}, "sanity": {"warnings": []}}
        self.masks: dict[str, np.ndarray] = {}
        self.mine: set[str] = set()
        adopt(existing, read_masks(self.run_dir), self.results, self.masks, self.fp, self.mine)
        # Per-sample clean correctness: paired comparisons of natural accuracy between runs need it.
        self.set_flags(NATURAL, correct, {"n_test": len(correct)})

    def _keep_stale(self, existing: dict, seed: int) -> None:
        old = {n: e for n, e in existing.get("attacks", {}).items() if isinstance(e, dict)}
        kept = entries_on(old, self.fp, seed)
        if existing and (existing.get(reuse.KEY) != self.fp or len(kept) < len(old)):
            copy = reuse.keep_stale(self.path, existing.get(reuse.KEY))
            dropped = sorted(set(old) - set(kept))
            if dropped:
                print(f"  results of other weights or another seed ({', '.join(dropped)}) leave the file; "
                      f"a copy is kept in {copy}", flush=True)

    @property
    def attacks(self) -> dict[str, dict]:
        return self.results["attacks"]

    def set_flags(self, name: str, mask: np.ndarray, settings: dict) -> None:
        """Flags ``name`` with the signature of the weights and settings they belong to."""
        self.masks[name], self.masks[name + SIGNATURE] = mask, np.array(signature(settings, self.fp))

    def flags_for(self, name: str, settings: dict) -> Optional[np.ndarray]:
        """The flags ``name`` held for these weights and ``settings``, else None."""
        return mask_for(self.masks, name, settings, self.fp)

    def record(self, name: str, entry: dict, mask: np.ndarray, settings: dict) -> None:
        """Attack ``name``'s finished entry and its flags, computed by this invocation."""
        self.mine.add(name)
        self.attacks[name] = entry
        self.set_flags(name, mask, settings)

    def record_skip(self, name: str, why: str) -> bool:
        """A skipped attack, unless a result of it is held (a skip never overwrites one); whether
        it was recorded."""
        if "robust_accuracy" in self.attacks.get(name, {}):
            return False
        self.attacks[name] = {"skipped": why}
        return True

    def record_sanity(self, report: dict) -> None:
        self.mine.add("sanity")
        self.results["sanity"] = report

    def save(self) -> None:
        """Writes both files. Under the results folder's lock, the files are read again just before
        they are written: what another process wrote since (another attack on this run) is merged
        in, not lost."""
        def merge(latest: dict) -> dict:   # a file written meanwhile for other weights: stale/ first
            adopt(latest, read_masks(self.run_dir), self.results, self.masks, self.fp, self.mine)
            self.summarise(self.results, self.masks)
            return self.results

        results_file.write(self.path, merge, self.fp, exact=True,
                           arrays=lambda: {os.path.join(self.results_dir, MASKS_FILE): (self.masks, False)})
