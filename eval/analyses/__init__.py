"""The analyses, registered like the attacks (DESIGN.md, contract 8): ``ANALYSES = {name: module}``.

Usage::

    from eval.analyses import ANALYSES
    a = ANALYSES["transferability"]
    result = a.evaluate("runs/cce_rm", a.Options(n_samples=1000))   # writes RUN/eval/NAME.json
    a.rows(result)          # its rows of results.jsonl (studies.results adds the run's columns)
    print(a.table(result))  # its Markdown table

Every module is one analysis, with:

    NAME                    its name: the results file RUN/eval/NAME.json, a study's ``evaluations``
    SCOPE                   "run" (one job per run) or "runs" (one job across a study part's runs)
    Options                 a frozen dataclass: its settings, the CLI's flags of the same names
    evaluate(target, options) -> result   target: eval.target.Target or a path (a list for "runs");
                            written through eval.results_file, reused on the same weights and settings
    stored(target)          the result on file for the weights the target holds now, else None
                            ("runs": stored(targets, out_dir))
    rows(result, attacks)   results.jsonl's rows of a result (evaluation, attack, eps, ..., metric,
                            value, key; "runs": ``run``, the index of the run a row belongs to)
    job_options(scale, part, seed, members, earlier) -> the options of a study's job on one run, or
                            None where it does not apply ("runs": job_options(scale, part, seed, labels))
    cost(options, run_config) -> member forward-backward passes (the planner's estimate)
    table(result)           its Markdown table

and optionally ``canary_options`` (the attack suite: the undefended canary's options), ``sanity``
(its masking checks, shown on a study's page), ``plan_shards`` and ``shard`` (a job split into
shards across Ray tasks, merged by ``evaluate``'s ``merged``) and ``FIGURES`` (figures drawn after
its study job, by name, from figures/). studies/ loops over this
registry and never branches on an analysis's name: adding an analysis is one module and its name in
_MODULES below.
"""
# The registry: one name per analysis, in the order studies run and show them.
_MODULES = ("attack_suite", "transferability", "detection", "adaptive_detection", "blackbox")


def __getattr__(name: str):
    """``ANALYSES``, built on first use (PEP 562): ``python -m eval.analyses.NAME`` runs a module
    that this package has not imported yet."""
    if name != "ANALYSES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    global ANALYSES
    modules = [importlib.import_module(f"{__name__}.{m}") for m in _MODULES]
    ANALYSES = {m.NAME: m for m in modules}
    return ANALYSES
