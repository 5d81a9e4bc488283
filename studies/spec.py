"""A study as data: one TOML file per paper table or figure, under studies/specs/ (read with tomllib).

Usage::

    from studies import spec
    s = spec.load("table4")                 # Study
    spec.names()                            # every study, "paper" last
    s.runs[0].label, s.paper["pgd"]["ADV_1"] # "ADV_1", 38.0 (percent, as printed in the paper)

A study file holds:

    name, title, source       which paper object it reproduces
    dataset, arch             the paper's data set and member architecture (a run may set its own arch)
    layout                    how its table is drawn: "attacks" (rows = attacks, columns = runs, Tables
                              3-5, 10, 11), "natural" (Table 7), "transferability" (Table 6), "blackbox"
                              (Tables 12-13), "detection" (Figs 2-4), "training_time" (Table 9)
    evaluations               what every run needs: attack_suite, transferability, detection,
                              adaptive_detection, training_time; blackbox (one job across all runs)
    attacks                   the attack-suite attacks (attacks.registry names)
    full_evaluation           optional, default false: a scale may shrink the attacks' k and sample
                              count but not drop any of them nor the sanity checks (a study of the
                              evaluation itself, where the dropped attack would be the finding)
    claims_by                 optional, "paper" (default: the claims are the paper's) or "package"
                              (this package's own claims, in the studies that go past the paper);
                              the results page counts the two apart
    [[runs]]                  label (the paper's column name), method (a method or preset of
                              cce_tf.config), members, and optionally lambda_pm, lambda_dm, arch
    [paper.METRIC]            the paper's numbers in percent (seconds for training_time), keyed by run
                              label ("SOURCE>TARGET" for the black-box matrix); METRIC is an attack
                              name, "natural", "any_attack", a Table 6 symbol (a_en_en, a11, a22,
                              S11, S01, S10, S00, T, nT, a_single), "blackbox_eps0" / "blackbox_eps1",
                              "auc_pgd" / "auc_bim" / "auc_mim" (Fig 3), "auc_sweep0" ... "auc_sweep7"
                              (Fig 4, ε × {1,2,4,8,12,16,20,24}/8), "seconds_per_epoch", or from
                              adaptive_detection "adaptive_auc_ATTACK", "evaded_robust_ATTACK" and
                              "detection_aware" (eval/analyses/adaptive_detection.py)
    parts, keep               instead of all of the above but name and title: a study made of other
                              studies (their file names, in order), each kept to the run labels of
                              ``keep`` and the claims between them (e.g. headline.toml)
    [[budgets]]               of a study made of parts, optionally: study, scale, out_dir of the same
                              claims at another training budget, shown beside its own on its page
    [[claims]]                the paper's qualitative claims, each checkable: text, metric, a, b (run
                              labels, or b = a number in percent for a threshold), direction (">" or
                              "<"), margin (percent points, default 0: a margin the paper states as
                              part of the claim, which the verdict tests), and optionally size =
                              [low, high] (percent points: the range of a - b the paper's text states,
                              e.g. "a gap of 2%~3%" = [2, 3]; shown beside the verdict, not tested by it)

The paper's numbers live only here (DESIGN.md: one home per paper object).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from typing import Optional, Union

SPEC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
LAYOUTS = ("attacks", "natural", "transferability", "blackbox", "detection", "training_time")
CLAIMS_BY = ("paper", "package")
STUDY_EVALUATIONS = ("training_time",)   # read from the runs' files, not an analysis (studies.results)


def allowed_evaluations() -> tuple[str, ...]:
    """What a study's ``evaluations`` may name: every analysis of eval.analyses.ANALYSES, then
    STUDY_EVALUATIONS."""
    from eval.analyses import ANALYSES

    return (*ANALYSES, *STUDY_EVALUATIONS)
PAPER = "paper"


class SpecError(ValueError):
    """A study file that does not follow the format above; one line naming the file."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One column of a paper table: what to train (the seed comes from the command line)."""

    label: str
    method: str
    members: int
    arch: str
    lambda_pm: Optional[float] = None
    lambda_dm: Optional[float] = None

    def key(self, dataset: str) -> tuple:
        """Runs with equal keys are one training job, whichever studies list them and however they
        are spelled (a preset, or "cce" with its lambdas)."""
        from cce_tf import config

        return (dataset, self.arch, self.members, *config.resolve_method(self.method, self.lambda_pm,
                                                                         self.lambda_dm))


@dataclasses.dataclass(frozen=True)
class Claim:
    """"a direction b (+ margin)" on one metric, e.g. CCE-RM_2 > ADP_2 under PGD."""

    text: str
    metric: str
    a: str
    b: Union[str, float]   # a run label, or a threshold in percent
    direction: str = ">"
    margin: float = 0.0    # percent points; part of the claim: the verdict is on a - b vs margin
    size: Optional[tuple[float, float]] = None   # percent points: the a - b the paper's text states

    @property
    def threshold(self) -> bool:
        return not isinstance(self.b, str)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Another training budget of a composite study's claims, shown beside its own in the summary of
    its page: a study (its claims a subset of the composite's), the scale that sets the budget, and
    the OUT_DIR it runs in (studies.reproduce --study STUDY --scale SCALE --out_dir OUT_DIR)."""
    study: str
    scale: str
    out_dir: str


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    title: str
    source: str
    dataset: str
    arch: str
    layout: str
    evaluations: tuple[str, ...]
    attacks: tuple[str, ...]
    runs: tuple[RunSpec, ...]
    paper: dict            # metric -> {cell key -> number}
    claims: tuple[Claim, ...]
    parts: tuple["Study", ...] = ()   # the studies a composite ("paper") is made of
    full_evaluation: bool = False
    claims_by: str = "paper"   # whose claims: the paper's, or this package's (CLAIMS_BY)
    budgets: tuple[Budget, ...] = ()   # the same claims at other training budgets, beside this study's

    def run(self, label: str) -> RunSpec:
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(label)


def names() -> list[str]:
    """Every study name in the paper's order: the files under specs/, then "paper" (all of them)."""
    files = [f[:-5] for f in os.listdir(SPEC_DIR) if f.endswith(".toml")]
    return sorted(files, key=_paper_order) + [PAPER]


def _paper_order(name: str) -> tuple:
    """Tables before figures, each by number (table10a after table9), as the paper prints them; then
    the studies that are not paper objects (adaptive), by name."""
    kind = name.rstrip("0123456789ab")
    rest = name[len(kind):]
    number = rest.rstrip("ab")
    return ({"table": 0, "fig": 1}.get(kind, 2), kind, int(number) if number else 0, rest[len(number):])


def load(name: str) -> Study:
    """The study called ``name`` (or in the file ``name``.toml); ``paper`` is every study. SpecError
    for a bad file, KeyError for an unknown name."""
    if name == PAPER:
        parts = tuple(p for p in (load(n) for n in names() if n != PAPER) if not p.parts)
        return _made_of(PAPER, "Every table and figure of the paper, and the studies that go past it", "all", parts)
    path = name if name.endswith(".toml") else os.path.join(SPEC_DIR, f"{name}.toml")
    if not os.path.isfile(path):
        raise KeyError(f"unknown study {name!r}: choose one of {', '.join(names())}")
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{path}: {e}") from None
    return _composite(raw, path) if "parts" in raw else _parse(raw, path)


def _composite(raw: dict, path: str) -> Study:
    """A study made of other studies' files (``parts``), each kept to the run labels of ``keep`` and
    the claims between kept runs: the paper's own tables, claims and numbers, one home each."""
    keep = raw.get("keep")
    parts = []
    for n in raw["parts"]:
        try:
            part = load(n)
        except KeyError:
            raise SpecError(f"{path}: part {n!r} is not a study") from None
        if part.parts:
            raise SpecError(f"{path}: part {n!r} is itself made of parts")
        if keep is not None:
            runs = tuple(r for r in part.runs if r.label in keep)
            labels = {r.label for r in runs}
            claims = tuple(c for c in part.claims if c.a in labels and (c.threshold or c.b in labels))
            part = dataclasses.replace(part, runs=runs, claims=claims)
        parts.append(part)
    for key in ("name", "title"):
        if key not in raw:
            raise SpecError(f"{path}: the study lacks {key!r}")
    budgets = []
    for b in raw.get("budgets", []):
        if not isinstance(b, dict) or set(b) != {"study", "scale", "out_dir"}:
            raise SpecError(f"{path}: each [[budgets]] has exactly study, scale and out_dir")
        budgets.append(Budget(**{k: str(v) for k, v in b.items()}))
    return dataclasses.replace(_made_of(raw["name"], raw["title"], raw.get("source", ""), tuple(parts)),
                               budgets=tuple(budgets))


def _made_of(name: str, title: str, source: str, parts: tuple[Study, ...]) -> Study:
    """A study with no runs of its own: its parts' tables, in order."""
    return Study(name=name, title=title, source=source, dataset=parts[0].dataset, arch=parts[0].arch,
                 layout="attacks", evaluations=(), attacks=(), runs=(), paper={}, claims=(), parts=parts)


def _parse(raw: dict, path: str) -> Study:
    from attacks import registry
    from cce_tf import config, data

    def need(d: dict, key: str, where: str):
        if key not in d:
            raise SpecError(f"{path}: {where} lacks {key!r}")
        return d[key]

    arch = raw.get("arch", "cnn")
    runs = []
    for i, r in enumerate(raw.get("runs", [])):
        method = need(r, "method", f"runs[{i}]")
        if method not in config.METHOD_CHOICES:
            raise SpecError(f"{path}: runs[{i}] has method {method!r}, not one of {config.METHOD_CHOICES}")
        runs.append(RunSpec(label=need(r, "label", f"runs[{i}]"), method=method,
                            members=int(need(r, "members", f"runs[{i}]")), arch=r.get("arch", arch),
                            lambda_pm=r.get("lambda_pm"), lambda_dm=r.get("lambda_dm")))
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise SpecError(f"{path}: two runs share a label")
    layout = need(raw, "layout", "the study")
    if layout not in LAYOUTS:
        raise SpecError(f"{path}: layout {layout!r} is not one of {LAYOUTS}")
    evaluations = tuple(raw.get("evaluations", ()))
    for e in evaluations:
        if e not in allowed_evaluations():
            raise SpecError(f"{path}: evaluation {e!r} is not one of {allowed_evaluations()}")
    attacks = tuple(raw.get("attacks", ()))
    for a in attacks:
        if a not in registry.ATTACKS:
            raise SpecError(f"{path}: attack {a!r} is not one of {', '.join(registry.ATTACKS)}")
    dataset = need(raw, "dataset", "the study")
    if dataset not in data.DATASETS:
        raise SpecError(f"{path}: dataset {dataset!r} is not one of {data.DATASETS}")
    paper = {str(m): {str(k): float(v) for k, v in cells.items()} for m, cells in raw.get("paper", {}).items()}
    claims = []
    for i, c in enumerate(raw.get("claims", [])):
        size = c.get("size")
        if size is not None:
            if (not isinstance(size, list) or len(size) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in size)):
                raise SpecError(f"{path}: claims[{i}] size must be [low, high] in percent points")
            if size[0] > size[1]:
                raise SpecError(f"{path}: claims[{i}] size {size} has low > high")
            size = (float(size[0]), float(size[1]))
        claim = Claim(text=need(c, "text", f"claims[{i}]"), metric=need(c, "metric", f"claims[{i}]"),
                      a=need(c, "a", f"claims[{i}]"), b=need(c, "b", f"claims[{i}]"),
                      direction=c.get("direction", ">"), margin=float(c.get("margin", 0.0)), size=size)
        if claim.direction not in (">", "<"):
            raise SpecError(f"{path}: claims[{i}] direction must be '>' or '<'")
        for side in (claim.a,) + ((claim.b,) if not claim.threshold else ()):
            if side not in labels:
                raise SpecError(f"{path}: claims[{i}] names run {side!r}, not one of {labels}")
        claims.append(claim)
    claims_by = raw.get("claims_by", "paper")
    if claims_by not in CLAIMS_BY:
        raise SpecError(f"{path}: claims_by {claims_by!r} is not one of {CLAIMS_BY}")
    return Study(name=need(raw, "name", "the study"), title=need(raw, "title", "the study"),
                 source=raw.get("source", ""), dataset=dataset, arch=arch, layout=layout,
                 evaluations=evaluations, attacks=attacks, runs=tuple(runs), paper=paper,
                 claims=tuple(claims), full_evaluation=bool(raw.get("full_evaluation", False)),
                 claims_by=claims_by)
