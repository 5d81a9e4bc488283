"""The Python entry point of the evaluation, for a notebook or a script: one call, as RobustBench's
``benchmark(model, ...)``, evaluates a trained run, a model file or any ``keras.Model`` in memory
under the chosen attacks and analyses and returns one result object (docs/api.md).

Usage::

    from eval.api import benchmark
    report = benchmark("runs/demo", attacks=("fgsm", "pgd"), analyses=("detection",), n_samples=500)
    report.robust_accuracy["pgd"], report.worst_case          # fractions in [0, 1]
    report.flags["pgd"], report.worst_case_flags              # per-sample robust flags (numpy bool)
    report.analyses["detection"]["attacks"]["pgd"]["auc"]    # each analysis's result dict

    report = benchmark(model, dataset="fashion_mnist", ...)   # a keras.Model: results in a temporary
                                                              # folder (``folder``: yours)

The attack suite always runs (``attacks``: attacks.settings.ATTACK_NAMES; default the paper's list);
``analyses`` names any other analysis of eval.analyses.ANALYSES that evaluates one run. The common
settings (``n_samples``, ``batch_size``, ``seed``, ``nb_iter``, ``force``, ``verbose``) go to every
analysis whose Options has them, ``options`` ({name: {field: value}}) sets any other field. Results
are written and reused exactly as the command-line tools write and reuse them (the CLIs call the same
``evaluate`` of each analysis).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from eval.target import Target

COMMON = ("n_samples", "batch_size", "seed", "nb_iter", "force", "verbose")


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``benchmark`` measured on one target.

    natural_accuracy: on the test samples of the suite (``n_test``); robust_accuracy: attack ->
    robust accuracy on the first ``n_samples[attack]`` samples; worst_case: the per-sample worst
    case over the attacks (DESIGN.md, contract 7), on its first ``worst_case_n`` samples; flags:
    attack -> per-sample robust flags, and ``natural`` the clean correctness; analyses: name -> the
    analysis's result dict (its RUN/eval/NAME.json); suite: attack_suite.json's dict; target: what
    was evaluated (``target.results_dir``: where the files are)."""

    target: Target
    natural_accuracy: float
    n_test: int
    robust_accuracy: dict[str, float]
    n_samples: dict[str, int]
    worst_case: Optional[float]
    worst_case_n: int
    flags: dict[str, np.ndarray]
    analyses: dict[str, dict]
    suite: dict

    @property
    def worst_case_flags(self) -> np.ndarray:
        """Per sample of the first ``worst_case_n``: robust under every attack with flags."""
        names = (self.suite.get("any_attack") or {}).get("attacks", [])
        if not names:
            return np.zeros(0, bool)
        return np.logical_and.reduce([np.asarray(self.flags[a][:self.worst_case_n], bool) for a in names])

    def table(self) -> str:
        """The suite's paper-shaped table and each analysis's, in Markdown."""
        from eval.analyses import ANALYSES

        parts = [ANALYSES["attack_suite"].table(self.suite)]
        parts += [ANALYSES[name].table(r) for name, r in self.analyses.items()]
        return "\n\n".join(parts)


def open_target(model: Any, dataset: Optional[str] = None, folder: Optional[str] = None,
                trust_model: bool = False) -> Target:
    """``model`` as an eval.target.Target: a Target as it is, a path (run folder, .keras file or
    SavedModel folder), or a classifier in memory (``Target.of_model``; results under ``folder``)."""
    if isinstance(model, Target):
        return model
    if isinstance(model, str):
        return Target(model, dataset, trust_model)
    return Target.of_model(model, dataset, folder)


def options_for(analysis, settings: Mapping[str, Any], extra: Mapping[str, Any] = ()):
    """``analysis.Options`` from the common ``settings`` it has a field for, then ``extra``."""
    fields = {f.name for f in dataclasses.fields(analysis.Options)}
    kw = {k: v for k, v in settings.items() if k in fields and v is not None}
    kw.update(dict(extra))
    return analysis.Options(**kw)


def benchmark(model: Any, dataset: Optional[str] = None, attacks: Optional[Sequence[str]] = None,
              analyses: Sequence[str] = (), n_samples: Optional[int] = None, batch_size: int = 500,
              seed: int = 0, nb_iter: Optional[int] = None, sanity: bool = False, force: bool = False,
              verbose: int = 0, folder: Optional[str] = None, trust_model: bool = False,
              options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Report:
    """Evaluate ``model`` (a run folder, a model file, a Target or a ``keras.Model``) under the
    attack suite's ``attacks`` and the ``analyses``; returns a ``Report``.

    :param dataset: the data set of a model (a run knows its own).
    :param sanity: also the suite's gradient-masking checks (eval/sanity.py).
    :param options: per analysis name, more fields of its Options (e.g. {"detection": {"sweep": False}}).
    :raises UsageError: bad input (an unknown analysis or attack, a path that is not a model).
    """
    from cce_tf.cli_flags import UsageError
    from eval.analyses import ANALYSES

    options = dict(options or {})
    unknown = [a for a in analyses if a not in ANALYSES or ANALYSES[a].SCOPE != "run" or a == "attack_suite"]
    if unknown:
        choices = [n for n, a in ANALYSES.items() if a.SCOPE == "run" and n != "attack_suite"]
        raise UsageError(f"analyses {unknown}: choose from {', '.join(choices)}")
    target = open_target(model, dataset, folder, trust_model)
    settings = dict(n_samples=n_samples, batch_size=batch_size, seed=seed, nb_iter=nb_iter, force=force,
                    verbose=verbose, dataset=dataset if target.kind != "run" else None, trust_model=trust_model)
    suite = ANALYSES["attack_suite"]
    extra = dict(sanity=sanity, **({"attacks": tuple(attacks)} if attacks is not None else {}))
    r = suite.evaluate(target, options_for(suite, settings, {**extra, **options.pop("attack_suite", {})}))
    done = {name: ANALYSES[name].evaluate(target, options_for(ANALYSES[name], settings, options.get(name, {})))
            for name in analyses}
    entries = {n: e for n, e in r["attacks"].items() if "robust_accuracy" in e}
    worst = r.get("any_attack") or {}
    return Report(target=target, natural_accuracy=r["natural_accuracy"], n_test=r["n_test"],
                  robust_accuracy={n: e["robust_accuracy"] for n, e in entries.items()},
                  n_samples={n: e["n_samples"] for n, e in entries.items()},
                  worst_case=worst.get("robust_accuracy"), worst_case_n=worst.get("n_samples", 0),
                  flags={k: v for k, v in r["flags"].items() if not k.endswith("__key")},
                  analyses=done, suite=r)
