"""DESIGN.md, contract 8: every analysis of eval.analyses.ANALYSES is checked for the same things,
on the tiny trained run of the fixtures (a new analysis is checked by being registered):

- it writes its results through eval.results_file (the one writer), under the target's results
  folder (an analysis across runs: under its out_dir);
- run again on the same weights and settings it reuses its result: no attack runs;
- on new weights it recomputes, stamps the new fingerprint and keeps the old file under stale/;
- its results.jsonl rows parse (the keys of studies.results.ROW_KEYS, a number as value);
- its cost for the planner is positive; its table is Markdown.
"""
import dataclasses
import os

import pytest

from conftest import copy_run
from eval import batches, reuse, results_file
from eval.analyses import ANALYSES
from eval.target import Target

# The cheapest settings: the fields an analysis has of these, then its own below.
TINY = dict(n_samples=16, batch_size=16, nb_iter=1, seed=0, verbose=0)
OWN = {"attack_suite": dict(attacks=("fgsm", "pgd"), sanity=False),
       "detection": dict(attacks=("pgd",), sweep=False),
       "adaptive_detection": dict(betas=(1.0,))}


def tiny_options(analysis, **kw):
    fields = {f.name for f in dataclasses.fields(analysis.Options)}
    return analysis.Options(**{k: v for k, v in {**TINY, **OWN.get(analysis.NAME, {}), **kw}.items()
                               if k in fields})


def run(analysis, targets, out_dir):
    if analysis.SCOPE == "runs":
        return analysis.evaluate(targets, tiny_options(analysis, out_dir=out_dir))
    return analysis.evaluate(targets[0], tiny_options(analysis))


def stored(analysis, targets, out_dir):
    if analysis.SCOPE == "runs":
        return analysis.stored(targets, out_dir)
    return analysis.stored(targets[0])


class Attacks:
    """Counts the attacks run: every analysis attacks through eval.batches.craft or the suite's
    attacks.registry.run_detailed."""

    def __init__(self, monkeypatch):
        from attacks import registry

        self.calls = 0
        for owner, name in ((batches, "craft"), (registry, "run_detailed")):
            real = getattr(owner, name)

            def counted(*a, _real=real, **kw):
                self.calls += 1
                return _real(*a, **kw)
            monkeypatch.setattr(owner, name, counted)


def new_weights(run_dir: str) -> None:
    from cce_tf.ensemble import load_run, save_keras_file

    ens = load_run(run_dir)
    ens.set_weights([w * 0.5 for w in ens.get_weights()])
    weights = os.path.join(run_dir, "ensemble.weights.h5")
    ens.save_weights(weights)
    save_keras_file(ens, weights, os.path.join(run_dir, "ensemble.keras"))


@pytest.mark.parametrize("name", list(ANALYSES))
def test_analysis_contract(name, tiny_run, tmp_path, monkeypatch):
    from studies import results
    from studies.scale import SCALES
    from studies.spec import load

    analysis = ANALYSES[name]
    for part in ("NAME", "SCOPE", "Options", "evaluate", "stored", "rows", "job_options", "cost", "table"):
        assert hasattr(analysis, part), f"{name} lacks {part}"
    assert dataclasses.is_dataclass(analysis.Options) and analysis.Options.__dataclass_params__.frozen
    assert analysis.SCOPE in ("run", "runs")
    dirs = [copy_run(tiny_run, tmp_path / "a")] + ([copy_run(tiny_run, tmp_path / "b")] if analysis.SCOPE == "runs" else [])
    out_dir = str(tmp_path / "out")
    where = out_dir if analysis.SCOPE == "runs" else Target(dirs[0]).results_dir

    written = []
    real_write = results_file.write
    monkeypatch.setattr(results_file, "write", lambda path, *a, **kw: written.append(path) or real_write(path, *a, **kw))
    attacks = Attacks(monkeypatch)
    first = run(analysis, [Target(d) for d in dirs], out_dir)
    assert written and all(os.path.dirname(p) == where for p in written), written
    assert attacks.calls > 0
    targets = [Target(d) for d in dirs]
    assert stored(analysis, targets, out_dir)[reuse.KEY] == first[reuse.KEY]

    # Same weights, same settings: reused, nothing attacked.
    attacks.calls = 0
    again = run(analysis, targets, out_dir)
    assert attacks.calls == 0 and again[reuse.KEY] == first[reuse.KEY]

    # New weights: recomputed, the new fingerprint, the old file kept under stale/.
    new_weights(dirs[0])
    targets = [Target(d) for d in dirs]
    assert stored(analysis, targets, out_dir) is None
    fresh = run(analysis, targets, out_dir)
    assert attacks.calls > 0
    assert fresh[reuse.KEY] != first[reuse.KEY]
    if analysis.SCOPE == "run":
        assert fresh[reuse.KEY] == targets[0].fingerprint
        assert os.path.isdir(os.path.join(where, "stale", first[reuse.KEY][:12]))

    # Its rows parse; its cost is positive; its table is Markdown.
    rows = analysis.rows(stored(analysis, targets, out_dir))
    assert rows
    for row in rows:
        assert set(row) - {"run"} <= set(results.ROW_KEYS), set(row) - set(results.ROW_KEYS)
        assert row["evaluation"] == name and isinstance(row["metric"], str) and isinstance(row["key"], str)
        assert isinstance(row["value"], (int, float)) and not isinstance(row["value"], bool)
    study, scale = load("table4"), SCALES["tiny"]
    config = targets[0].config
    if analysis.SCOPE == "runs":
        options = analysis.job_options(scale, study, 0, ["A", "B"])
        assert analysis.cost(options, [config, config]) > 0
    else:
        options = analysis.job_options(scale, study, 0, config["members"], None)
        assert analysis.cost(options, config) > 0
    assert "|---" in analysis.table(fresh)


def test_studies_never_branch_on_an_analysis():
    """studies/ loops over the registry: no comparison in its code names an analysis (a table's
    ``layout`` is the study file's, not an analysis)."""
    import re

    from conftest import ROOT

    folder = os.path.join(ROOT, "studies")
    for name in (n for n in os.listdir(folder) if n.endswith(".py")):
        with open(os.path.join(folder, name)) as f:
            code = [line.split("#")[0] for line in f if "layout" not in line]
        for analysis in ANALYSES:
            quoted = f"[\"']{analysis}[\"']"
            branch = re.compile(rf"(==|!=|\bin)\s*{quoted}|{quoted}\s*(==|!=|\bin\b|\bnot in\b)")
            assert not [line for line in code if branch.search(line)], (name, analysis)


def test_the_run_folder_is_opened_only_through_target():
    """figures/ and studies/ spell none of a run folder's file names: eval/target.py (and each
    analysis, its own results file) does."""
    from conftest import ROOT

    for package in ("figures", "studies"):
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in (n for n in names if n.endswith(".py")):
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                for spelled in ('"history.json"', '"config.json"', '"ensemble.weights.h5"', ', "eval")',
                                *(f'"{a}.json"' for a in ANALYSES)):
                    assert spelled not in text, (name, spelled)
