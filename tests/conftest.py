"""Shared fixtures: real Fashion-MNIST images and small runs trained by the real CLI."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(items):
    """`make test` runs on two workers (pytest-xdist, --dist loadfile: a test file's tests go to one
    worker, so its module fixtures are built once). The Ray files, minutes of waiting on their
    studies, go first (the queue keeps this order under --no-loadscope-reorder) rather than last
    beside an idle worker."""
    items.sort(key=lambda item: not item.module.__name__.startswith("test_ray"))   # stable


def train_cli(out_dir, *flags, check=True):
    """Run `python -m cce_tf.train` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "cce_tf.train", "--out_dir", str(out_dir), "--verbose", "0", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


# A study file's head: the attack suite under FGSM and PGD on Fashion-MNIST; the runs follow.
STUDY_HEAD = """
name = "mini"
title = "Methods under FGSM and PGD"
source = "a test"
dataset = "fashion_mnist"
layout = "attacks"
evaluations = ["attack_suite"]
attacks = ["fgsm", "pgd"]
"""
# Two runs and one claim (tests/test_studies.py).
MINI_STUDY = STUDY_HEAD + """runs = [{label = "ADV-EN_2", method = "adv-en", members = 2},
        {label = "CCE-RM_2", method = "cce-rm", members = 2}]
[paper.pgd]
"ADV-EN_2" = 39.7
"CCE-RM_2" = 44.7
[[claims]]
text = "CCE-RM_2 > ADV-EN_2 under PGD"
metric = "pgd"
a = "CCE-RM_2"
b = "ADV-EN_2"
"""


def copy_run(src, dest) -> str:
    """A copy of a trained run's config.json and weights in a new folder ``dest`` (without its
    eval/ results), so a test's evaluation files are its own."""
    os.makedirs(dest)
    for name in ("config.json", "ensemble.weights.h5"):
        shutil.copy(os.path.join(src, name), os.path.join(dest, name))
    return str(dest)


@pytest.fixture(scope="session")
def fmnist_test():
    """The first 512 real Fashion-MNIST test images and labels."""
    from cce_tf import data
    x, y = data.load("fashion_mnist", "test")
    return x[:512], y[:512]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A CCE-RM run (N = 2) trained for 2 epochs on 1024 Fashion-MNIST images by the real CLI."""
    out = tmp_path_factory.mktemp("runs") / "cce_rm"
    train_cli(out, "--train_subset", "1024", "--epochs", "2", "--nb_iter", "3")
    return str(out)
