"""The attack suite (Tables 3-5): robust accuracy of a run under the paper's attacks. Its CLI is
eval/analyses/attack_suite/cli.py; one concept per module, in the order a run goes through them:

    plan     SuiteOptions and their checks; per run, the attacks' params and sample counts, which
             stored results are reused; the shards of an attack (the Ray executor's)
    engine   one attack over n samples in seeded batches: bounds checks, robust flags, worst case
    store    attack_suite.json, its robust-flags npz, the adversarial examples, stale/ copies:
             the only code that reads or writes them, merging under the results folder's lock
    checks   eval/sanity.py's checks and canaries on the suite's flags
    run      evaluate / evaluate_run: the flat loop over the attacks; shard_mask
    report   the paper-shaped Markdown table and the lines under it
"""
