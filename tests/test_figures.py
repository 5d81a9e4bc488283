"""Every figure module renders a non-empty PNG (and PDF) with the paper's titles and axis labels,
from a copy of the tiny run (so its eval/ and figures/ outputs stay private to these tests)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from figures import drawing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(batch_size=256, nb_iter=2)
DETECTION = dict(FAST, n_samples=64)  # the detection figures reuse the fixture's results: same settings


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the tiny run (config, weights, history) with a small detection result."""
    from eval.analyses import detection

    out = tmp_path_factory.mktemp("fig") / "run"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("eval", "figures", "logs",
                                                                  "checkpoints"))
    detection.evaluate(str(out), detection.Options(verbose=0, **DETECTION))
    return str(out)


@pytest.fixture
def drawn(monkeypatch):
    """Records the text of every figure saved through figures.drawing.save."""
    seen = {}
    original = drawing.save

    def save(fig, run_dir, name):
        texts = set()
        if fig._suptitle is not None:
            texts.add(fig._suptitle.get_text())
        for ax in fig.axes:
            texts.update([ax.get_title(), ax.get_xlabel(), ax.get_ylabel()])
            if hasattr(ax, "get_zlabel"):
                texts.add(ax.get_zlabel())
            legend = ax.get_legend()
            if legend is not None:
                texts.update(t.get_text() for t in legend.get_texts())
        seen[name] = " | ".join(sorted(texts))
        return original(fig, run_dir, name)

    monkeypatch.setattr(drawing, "save", save)
    return seen


def check_png(paths, run_dir, name):
    png = os.path.join(run_dir, "figures", f"{name}.png")
    assert paths == [png, png[:-4] + ".pdf"]
    assert os.path.getsize(png) > 1000 and os.path.getsize(paths[1]) > 1000
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = drawing.plt.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0.01


def test_entropy_histogram(run, drawn):
    from figures import entropy_histogram

    paths = entropy_histogram.make(run, **DETECTION)
    check_png(paths, run, "entropy_histogram")
    text = drawn["entropy_histogram"]
    for expected in ("Histogram of prediction entropy", "Entropy of the ensemble prediction",
                     "Number of images", "Benign", "Adversarial"):
        assert expected in text


def test_roc_attacks(run, drawn):
    from figures import roc_attacks

    paths = roc_attacks.make(run, **DETECTION)
    check_png(paths, run, "roc_attacks")
    text = drawn["roc_attacks"]
    for expected in ("ROC of CCE-RM under multiple types of attack", "False Positive Rate",
                     "True Positive Rate", "PGD (", "BIM (", "MIM ("):
        assert expected in text
    assert "AUC" in text


def test_roc_eps(run, drawn):
    from figures import roc_eps

    paths = roc_eps.make(run, **DETECTION)
    check_png(paths, run, "roc_eps")
    text = drawn["roc_eps"]
    for expected in ("ROC of CCE-RM under multiple attack strengths", "False Positive Rate",
                     "True Positive Rate", "ε = 0.025", "ε = 0.1"):
        assert expected in text


def test_predictions(run, drawn):
    from figures import predictions

    paths = predictions.make(run, index=3, **FAST)
    check_png(paths, run, "predictions")
    text = drawn["predictions"]
    for expected in ("$f^{1}$", "$f^{2}$", "$f^{en}$", "Benign", "Adversarial", "Probability",
                     "Prediction example"):
        assert expected in text


def test_loss_surface(run, drawn):
    from figures import loss_surface

    paths = loss_surface.make(run, index=3, grid=7, **FAST)
    check_png(paths, run, "loss_surface")
    text = drawn["loss_surface"]
    for expected in ("Adversarial input", "Loss surface", "Predicted labels", "Loss",
                     "u (gradient)", "Prediction surface of model $f^{1}$",
                     "Prediction surface of model $f^{en}$"):
        assert expected in text


def test_loss_surface_directions_are_orthogonal_with_equal_norms():
    from figures.loss_surface import directions

    grad = np.random.default_rng(0).normal(size=(4, 4, 1))
    for kind in ("sign", "l2"):
        u, v = directions(grad, kind, np.random.default_rng(1))
        assert abs(float((u * v).sum())) < 1e-8
        assert np.linalg.norm(u) == pytest.approx(np.linalg.norm(v)) == pytest.approx(4.0)
    assert np.array_equal(directions(grad, "sign", np.random.default_rng(1))[0], np.sign(grad))


def test_training_curves(run, drawn):
    from figures import training_curves

    paths = training_curves.make(run)
    check_png(paths, run, "training_curves")
    text = drawn["training_curves"]
    for expected in ("Training curves", "Epoch", "Loss", "Accuracy", "test accuracy (clean)"):
        assert expected in text


def test_figure_cli_and_bad_input(run, tmp_path):
    env = dict(os.environ, CCE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    ok = subprocess.run([sys.executable, "-m", "figures.training_curves", "--run_dir", run],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "training_curves.png" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "figures.roc_attacks", "--run_dir", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "not a trained run" in bad.stderr
