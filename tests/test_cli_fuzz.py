"""Every CLI's numeric flags with bad values: one line, exit code 2, nothing written (the run folder
and the working directory stay as they were). cce_tf.train's flags: tests/test_train_cli.py.

A flag defined once and shared (cce_tf.cli_flags.define_shared) is fuzzed through a few CLIs that
use it; every other CLI is fuzzed on the flags it defines itself. Then the one convention, checked
in-process on every tool of studies.cli_docs.tools() (no TensorFlow, no subprocess but the last):
--help exits 0 and lists the choices of every enum, an unknown flag or a bad choice is one line and
exit 2, --eps takes 8/255, --n_samples means "at most the first N", N >= 1, and --run_dir repeats."""
import concurrent.futures as cf
import os
import subprocess
import sys

import pytest
from absl import flags

from cce_tf import cli_flags
from conftest import copy_run
from studies.cli_docs import tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = ["-1", "nan", "inf", "1e300", "abc", ""]
ATTACK = ["n_samples", "batch_size", "seed", "nb_iter", "eps", "eps_iter"]
CLIS = {
    "eval.attack_suite": ATTACK + ["mul_nb_iter"],
    "eval.analyses.transferability": ATTACK,                    # the shared flags of eval.flags
    "eval.analyses.blackbox": ["eps", "eps_iter", "n_samples"],
    "eval.analyses.detection": ["eps", "eps_iter", "sweep_eps"],
    "figures.entropy_histogram": ATTACK,               # the shared flags of figures.figure_cli
    "figures.roc_eps": ["eps", "eps_iter"],
    "figures.predictions": ["index", "eps", "eps_iter"],
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


MODULES = [m for m, _ in tools()]


def _tool(module):
    import importlib
    return importlib.import_module(module)


def _run(module, capsys, *argv):
    code = _tool(module).cli(["prog", *argv])
    out = capsys.readouterr()
    return code, out.out, [l for l in out.err.splitlines() if l.strip()]


@pytest.mark.parametrize("module", MODULES)
def test_help_exits_0_and_lists_every_choice(module, capsys):
    code, out, _ = _run(module, capsys, "--help")
    assert code == 0
    for f in cli_flags.flag_list(_tool(module).FLAGS):
        assert f"--{f.name}:" in out
        for choice in getattr(f.parser, "enum_values", None) or getattr(f.parser, "choices", None) or ():
            assert choice in out, (f.name, choice)


@pytest.mark.parametrize("module", MODULES)
def test_unknown_flag_and_bad_choice_exit_2_in_one_line(module, capsys):
    code, _, err = _run(module, capsys, "--no_such_flag=1")
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "no_such_flag" in err[0]
    choice_flags = [f for f in cli_flags.flag_list(_tool(module).FLAGS)
                    if isinstance(f.parser, (flags.EnumParser, cli_flags.ChoiceListParser))]
    for f in choice_flags:
        code, _, err = _run(module, capsys, f"--{f.name}=not_a_choice")
        assert code == 2 and len(err) == 1 and f"--{f.name}" in err[0], (f.name, err)


def _parsed(module, *argv):
    fv = _tool(module).FLAGS
    cli_flags.parse(fv, ["prog", *argv])
    try:
        return {name: fv[name].value for name in fv}
    finally:
        fv.unparse_flags()


@pytest.mark.parametrize("module", MODULES)
def test_shared_flags_have_one_meaning(module):
    fv = _tool(module).FLAGS
    names = set(fv)
    if "eps" in names:
        value = _parsed(module, "--eps", "8/255")["eps"]
        assert value == pytest.approx(8 / 255) or value == [pytest.approx(8 / 255)]
        with pytest.raises(cli_flags.UsageError, match="--eps"):
            _parsed(module, "--eps", "2")
    if "eps_iter" in names:
        assert _parsed(module, "--eps_iter", "1/255")["eps_iter"] == pytest.approx(1 / 255)
    if "n_samples" in names:
        assert fv["n_samples"].default is None and _parsed(module, "--n_samples", "5")["n_samples"] == 5
        for bad in ("0", "-1"):
            with pytest.raises(cli_flags.UsageError, match="--n_samples"):
                _parsed(module, "--n_samples", bad)
    if "run_dir" in names:
        assert _parsed(module, "--run_dir", "a", "--run_dir", "b")["run_dir"] == ["a", "b"]
    if "verbose" in names:
        assert fv["verbose"].default == 1
        with pytest.raises(cli_flags.UsageError, match="--verbose"):
            _parsed(module, "--verbose", "3")
    for name in names & set(cli_flags.SHARED):   # one help text, a tool's note appended at most
        assert fv[name].help.startswith(cli_flags.SHARED[name][2]), (module, name)


def test_every_cli_refuses_an_unknown_flag_before_tensorflow_starts():
    """As a process: exit 2, exactly one line on stderr (TensorFlow would add its own), fast."""
    env = dict(os.environ, CCE_OFFLINE="1", PYTHONPATH=ROOT)
    scripts = [["-m", m] for m in MODULES] + [[os.path.join(ROOT, "bench", b)] for b in ("attacks.py", "train_step.py")]

    def one(args):
        proc = subprocess.run([sys.executable, *args, "--no_such_flag"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        return args, proc.returncode, proc.stderr

    with cf.ThreadPoolExecutor(4) as pool:
        bad = [(a, rc, err) for a, rc, err in pool.map(one, scripts)
               if rc != 2 or err.count("\n") != 1 or not err.startswith("error:")]
    assert not bad, bad
