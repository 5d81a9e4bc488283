"""Installable like a library: pyproject's [project] against the requirements files, a console
script for every CLI, and `pip install .` into a fresh venv whose scripts run from outside the repo.

The fresh venv sees this interpreter's site-packages through a .pth file, so nothing (TensorFlow
least of all) is downloaded: pip installs only the package itself, --no-deps --no-build-isolation.
It builds from a copy of the package's files, so no build/ or *.egg-info lands in the repo."""
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT

PACKAGES = ("cce_tf", "attacks", "eval", "figures", "studies")
TEST_TOOLS = {"pytest", "pytest-xdist"}
TEST_AND_BUILD_TOOLS = TEST_TOOLS | {"setuptools"}   # in requirements.txt for make test, not the library's
# Module -> its console script. figures.* run as `cce-figure NAME`.
SCRIPTS = {"cce_tf.train": "cce-train", "cce_tf.export": "cce-export", "eval.attack_suite": "cce-attack",
           "eval.tables": "cce-tables", "eval.analyses.transferability": "cce-transfer", "eval.analyses.blackbox": "cce-blackbox",
           "eval.analyses.detection": "cce-detect", "eval.analyses.adaptive_detection": "cce-adaptive-detect",
           "studies.reproduce": "cce-reproduce", "studies.convergence": "cce-convergence"}
# studies.costs refits studies/timings.json inside the package, studies.cli_docs writes docs/cli.md:
# maintainer tools, kept as python -m.
MAINTAINER_ONLY = {"studies.costs", "studies.cli_docs"}


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _requirements(name: str) -> set[str]:
    with open(os.path.join(ROOT, name)) as f:
        return {line.split("#")[0].strip() for line in f if line.split("#")[0].strip()}


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ;]", req, maxsplit=1)[0].lower()


def test_dependencies_are_the_requirements_files():
    project = _pyproject()["project"]
    reqs = _requirements("requirements.txt")
    assert set(project["dependencies"]) == {r for r in reqs if _name(r) not in TEST_AND_BUILD_TOOLS}
    extras = project["optional-dependencies"]
    assert set(extras["autoattack"]) == _requirements("requirements-autoattack.txt")
    assert set(extras["cluster"]) == _requirements("requirements-cluster.txt")
    assert set(extras["test"]) == {r for r in reqs if _name(r) in TEST_TOOLS}


def _cli_modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name)) as f:
                        if 'if __name__ == "__main__":' in f.read():
                            rel = os.path.relpath(os.path.join(folder, name[:-3]), ROOT)
                            found.add(rel.replace(os.sep, "."))
    return found


def test_every_cli_has_a_console_script():
    scripts = _pyproject()["project"]["scripts"]
    from figures import cli as figure_cli
    for module in sorted(_cli_modules() - MAINTAINER_ONLY):
        if module.startswith("figures."):
            assert module == "figures.cli" or module.split(".")[1] in figure_cli.FIGURES, module
        else:
            assert scripts[SCRIPTS[module]] == f"{module}:cli", module
    assert scripts["cce-figure"] == "figures.cli:main"
    assert set(scripts) == set(SCRIPTS.values()) | {"cce-figure"}


def _source_copy(tmp_path) -> str:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for package in PACKAGES:
        shutil.copytree(os.path.join(ROOT, package), src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(src)


def _fresh_venv(tmp_path) -> tuple[str, str, dict]:
    """(venv, its purelib, the environment to run it in): a venv without the package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # This interpreter's packages (pip, setuptools, TensorFlow, ...) seen from the new venv.
    bases = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(purelib, "_cce_base.pth"), "w") as f:
        f.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in bases) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL")}
    return str(venv), purelib, env


def _where(python: str, cwd, env) -> str:
    """The files that ``import cce_tf, eval`` loads, run from ``cwd``."""
    return subprocess.run([python, "-c", "import cce_tf, eval; print(cce_tf.__file__, eval.__file__)"],
                          cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def test_pip_install_then_every_script_runs_its_help_outside_the_repo(tmp_path):
    src = _source_copy(tmp_path)
    venv, purelib, env = _fresh_venv(tmp_path)
    python = os.path.join(venv, "bin", "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", src], capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr[-3000:]
    assert os.path.isfile(os.path.join(purelib, "studies", "specs", "table4.toml"))   # package data
    assert not any(os.path.exists(os.path.join(ROOT, p)) for p in ("build", "cce_tf.egg-info", "cce_tf_egg-info"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    scripts = [[s] for s in sorted(_pyproject()["project"]["scripts"])] + [["cce-figure", "roc_eps"]]
    for argv in scripts:
        proc = subprocess.run([os.path.join(venv, "bin", argv[0]), *argv[1:], "--help"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{argv}: {proc.stderr[-2000:]}"
        assert "--" in proc.stdout and len(proc.stdout.splitlines()) > 3, f"{argv}: {proc.stdout[:500]}"
    # The installed copy answered, not the repo: its modules live in the venv.
    assert _where(python, elsewhere, env).count(purelib) == 2


def _stamp_rule() -> tuple[list[str], list[str]]:
    """The prerequisites and the recipe lines of the Makefile's venv rule ($(STAMP))."""
    with open(os.path.join(ROOT, "Makefile")) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$(STAMP):"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return lines[start].split(":", 1)[1].split(), recipe


def test_make_installs_the_package_editable_so_its_clis_run_from_any_folder(tmp_path):
    prerequisites, recipe = _stamp_rule()
    assert "pyproject.toml" in prerequisites          # a new console script or package reinstalls
    installs = [i for i, line in enumerate(recipe) if " pip install " in line]
    editable = [i for i in installs if re.search(r" -e \.$", recipe[i])]
    assert editable and editable[-1] == installs[-1], recipe   # after the requirements, its dependencies
    command = recipe[editable[-1]]
    assert "--no-deps" in command, command

    # The rule's own command, on a copy of the repo in a fresh venv: the copy's modules answer from
    # another folder, so the CLIs run this checkout's code (an editable install, not a copy of it).
    src = _source_copy(tmp_path)
    venv, purelib, env = _fresh_venv(tmp_path)
    python = os.path.join(venv, "bin", "python")
    argv = command.replace("$(PY)", python).split() + ["--no-index"]
    install = subprocess.run(argv, cwd=src, capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _where(python, elsewhere, env).count(src) == 2
    for cmd in ([python, "-m", "cce_tf.train", "--helpshort"], [os.path.join(venv, "bin", "cce-train"), "--helpshort"]):
        proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--out_dir" in proc.stdout, f"{cmd}: {proc.stderr[-2000:]}"


def test_every_package_folder_is_declared():
    """pyproject lists the packages one by one: a new folder of modules must be added there, or an
    install leaves it out."""
    declared = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".")
             for package in PACKAGES for d, _, files in os.walk(os.path.join(ROOT, package))
             if any(f.endswith(".py") for f in files)}
    assert found <= declared, found - declared


@pytest.mark.parametrize("argv", [["nope"], []])
def test_cce_figure_refuses_an_unknown_or_missing_figure(argv, monkeypatch, capsys):
    from figures import cli
    monkeypatch.setattr(sys, "argv", ["cce-figure", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
