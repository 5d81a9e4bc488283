"""Every CLI's numeric flags with bad values: one line, exit code 2, nothing written (the run folder
and the working directory stay as they were). cce_tf.train's flags: tests/test_train_cli.py.

A flag defined once and shared (eval.common.define_multi_run_flags, figures.common.define_run_flags)
is fuzzed through one CLI that uses it; every other CLI is fuzzed on the flags it defines or parses
itself."""
import concurrent.futures as cf
import os
import subprocess
import sys

import pytest

from conftest import copy_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = ["-1", "nan", "inf", "1e300", "abc", ""]
ATTACK = ["n_samples", "batch_size", "seed", "nb_iter", "eps", "eps_iter"]
CLIS = {
    "eval.attack_suite": ATTACK + ["mul_nb_iter"],
    "eval.transferability": ATTACK,                    # the shared flags of eval.common
    "eval.blackbox": ["eps", "eps_iter"],
    "eval.detection": ["eps", "eps_iter", "sweep_eps"],
    "figures.entropy_histogram": ATTACK,               # the shared flags of figures.common
    "figures.roc_eps": ["eps", "eps_iter"],
    "figures.predictions": ["index", "eps"],
    "figures.loss_surface": ["index", "radius", "grid"],
    "studies.reproduce": ["seeds", "max_parallel"],
}


def _listing(*folders):
    return sorted(os.path.join(d, f) for folder in folders for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    return copy_run(tiny_run, tmp_path_factory.mktemp("fuzz") / "run")


@pytest.mark.parametrize("cli", list(CLIS))
def test_bad_numbers_exit_2_with_one_line_and_write_nothing(cli, run, tmp_path):
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    base = (["--study", "table4", "--dry_run"] if cli == "studies.reproduce" else ["--run_dir", run])
    before = _listing(run, tmp_path)

    def one(flag_value):
        flag, value = flag_value
        proc = subprocess.run([sys.executable, "-m", cli, *base, f"--{flag}={value}"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        errors = [l for l in proc.stderr.splitlines() if l.startswith(("error:", "Traceback", "FATAL"))]
        return flag, value, proc.returncode, errors, proc.stderr[-400:]

    cases = [(f, v) for f in CLIS[cli] for v in BAD]
    with cf.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, cases))
    bad = [(f, v, rc, tail) for f, v, rc, errors, tail in outcomes
           if rc != 2 or len(errors) != 1 or not errors[0].startswith("error:")]
    assert not bad, bad
    assert _listing(run, tmp_path) == before
