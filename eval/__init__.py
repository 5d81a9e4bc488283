"""Measurements of trained runs; each CLI writes under RUN/eval/ or --out_dir (DESIGN.md, contracts 7-8).

Parts:

    attack_suite     robust accuracy under the paper's attacks (Tables 3-5): attack_suite.json; its CLI
    suite            the attack suite itself: plan, engine, store, checks, run, report
    sanity           gradient-masking checks reported beside the attack-suite table
    transferability  Table 6: transferability.json
    blackbox         the black-box matrix across runs (Tables 12-13)
    detection        entropy-based detection (Figs 2-4): detection.json
    adaptive_detection  the same detector against detector-aware attackers: adaptive_detection.json
    reuse            the one rule for reusing a result: same weights (SHA-256), same settings
    stats            Wilson / Newcombe intervals, paired bootstrap and McNemar, verdicts
    target           what is evaluated: a run folder or a model file (config, results folder, fingerprint)
    model_scan       a SavedModel's ops checked against an allow-list of pure numerics, before it is loaded
    flags            the flags and input checks the evaluation CLIs share
    labels           the paper's names of runs and radii in tables and figures
    batches          the test data; logits, labels and x_adv of a model, in batches
    progress         the progress bar with an ETA, time estimates
    output           JSON, percentages, Markdown tables, figures
"""
