"""Reproduce a paper table or figure with one command: plan, train, evaluate, aggregate over seeds.

The top of the one-way flow (DESIGN.md): it may import cce_tf, attacks, eval and figures; nothing
imports it.

    spec        a study as data (studies/specs/*.toml): runs, evaluations, the paper's numbers, claims
    plan        studies + scale + seeds -> training and evaluation jobs, and what is already done
    executors   run jobs here (in-process or worker processes) or on a Ray cluster
    results     results.jsonl, the tables with the paper's numbers, the claims and their verdicts
    reproduce   the CLI: python -m studies.reproduce --study table4
"""
