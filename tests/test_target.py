"""The run folder's one home (eval.target.Target, cce_tf.run_files) and the package's one atomic
writer (cce_tf.atomic). Fast: the run folders are built here from freshly initialised weights,
nothing is trained."""
import builtins
import json
import os

import keras
import numpy as np
import pytest

from cce_tf import atomic, checkpoint, run_files
from cce_tf.cli_flags import UsageError
from cce_tf.ensemble import Ensemble, build_ensemble, save_keras_file
from cce_tf.fingerprint import file_sha256
from cce_tf.models import build_member
from eval.analyses.attack_suite import store, plan as suite_plan
from eval.output import write_json
from eval.target import MODEL_FILE, RUN, Target, results_dir

SUITE = suite_plan.SuiteOptions(attacks=("fgsm",), n_samples=32, batch_size=32, sanity=False)
CONFIG = dict(dataset="fashion_mnist", arch="cnn", method="cce", preset="cce-rm", members=2,
              input_shape=[28, 28, 1], num_classes=10, seed=0)


def make_run(folder, keras_file=True) -> str:
    """A run folder as cce_tf.train leaves it (config.json, the weights, ensemble.keras unless
    ``keras_file`` is off: a run older than that file), with untrained weights."""
    keras.utils.set_random_seed(0)
    os.makedirs(folder)
    ens = build_ensemble("cnn", (28, 28, 1), 10, 2)
    weights = os.path.join(folder, run_files.WEIGHTS_FILE)
    ens.save_weights(weights)
    if keras_file:
        save_keras_file(ens, weights, os.path.join(folder, run_files.KERAS_FILE))
    with open(os.path.join(folder, run_files.CONFIG_FILE), "w") as f:
        json.dump(CONFIG, f)
    return str(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("target") / "run")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """One member saved alone: a classifier of (28, 28, 1) images, which fits two data sets."""
    path = tmp_path_factory.mktemp("model") / "member.keras"
    build_member("cnn", (28, 28, 1), 10).save(path)
    return str(path)


def test_a_run_folder(run):
    t = Target(run)
    assert (t.path, t.kind, t.config) == (run, RUN, CONFIG)
    assert t.results_dir == os.path.join(run, "eval") == results_dir(run)
    assert t.fingerprint == file_sha256(os.path.join(run, "ensemble.weights.h5"))
    ens = t.load()
    assert isinstance(ens, Ensemble) and len(ens.members) == 2
    with pytest.raises(UsageError, match="trained on fashion_mnist"):
        Target(run, "mnist")
    with pytest.raises(UsageError, match="config.json is missing"):
        Target(os.path.dirname(run))


def test_a_model_file(model_file):
    t = Target(model_file, "fashion_mnist")
    assert t.kind == MODEL_FILE and t.path == model_file
    assert (t.config["dataset"], t.config["members"], t.config["label"]) == ("fashion_mnist", 1, "member.keras")
    assert t.results_dir == model_file + ".eval" == results_dir(model_file)
    assert t.fingerprint == file_sha256(model_file)
    assert t.load() is t.load()   # loaded once, when opened
    assert t.load()(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
    with pytest.raises(UsageError, match="give --dataset"):
        Target(model_file)


def count_opens(monkeypatch, name):
    """A list that gets one entry each time a file called ``name`` is opened from now on."""
    opened, real = [], builtins.open

    def counting(file, *args, **kwargs):
        if os.path.basename(str(file)) == name:
            opened.append(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    return opened


@pytest.mark.parametrize("keras_file", [True, False], ids=["ensemble.keras", "weights only"])
def test_a_suite_plan_reads_config_json_once(tmp_path, monkeypatch, keras_file):
    folder = make_run(tmp_path / "run", keras_file)
    opened = count_opens(monkeypatch, run_files.CONFIG_FILE)
    plans, _ = suite_plan.plan_runs([folder], SUITE)
    assert len(opened) == 1
    assert plans[0].config == CONFIG and plans[0].run_dir == folder and isinstance(plans[0].model, Ensemble)


def test_atomic_write_leaves_the_file_and_nothing_else(tmp_path):
    path = tmp_path / "new" / "folder" / "r.json"
    obj = {"b": [1, 0.5], "a": None}
    assert atomic.write_json(str(path), obj) == str(path)
    assert path.read_text() == json.dumps(obj, indent=2)   # key order kept, no final newline
    atomic.write_json(str(path), obj, indent=None, newline=True)
    assert path.read_text() == json.dumps(obj) + "\n"
    assert os.listdir(path.parent) == ["r.json"]


@pytest.mark.parametrize("fail", ["fill raises midway", "not JSON", "a folder at the path", "a folder at PATH.tmp"])
def test_a_failed_write_keeps_the_old_file(tmp_path, fail):
    path = tmp_path / "r.json"
    if fail == "a folder at the path":
        path.mkdir()
        (path / "inside").write_text("kept")
        with pytest.raises(OSError):
            atomic.write_json(str(path), {"new": 1})
        assert (path / "inside").read_text() == "kept"
        assert sorted(os.listdir(tmp_path)) == ["r.json"]
        return
    path.write_text("old")
    if fail == "fill raises midway":
        def fill(f):
            f.write('{"half": ')
            raise ZeroDivisionError
        with pytest.raises(ZeroDivisionError):
            atomic.write_file(str(path), fill)
    elif fail == "not JSON":
        with pytest.raises(TypeError):
            atomic.write_json(str(path), {"x": object()})
    else:
        (tmp_path / "r.json.tmp").mkdir()
        with pytest.raises(OSError):
            atomic.write_json(str(path), {"new": 1})
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["r.json"] + (["r.json.tmp"] if fail == "a folder at PATH.tmp" else [])


def test_each_writer_keeps_its_bytes(tmp_path):
    """eval.output.write_json rounds (jsonable) and ends in a newline; attack_suite.json and the
    training files are json.dump(indent=2) as they were."""
    obj = {"acc": 0.1 + 0.2, "n": np.int64(3)}
    write_json(str(tmp_path / "c.json"), obj)
    assert (tmp_path / "c.json").read_text() == '{\n  "acc": 0.3,\n  "n": 3\n}\n'
    results = {"run_dir": "r", "attacks": {"pgd": {"robust_accuracy": 0.1 + 0.2}}}
    store.write_results(str(tmp_path / "run"), results, {"pgd": np.ones(2, bool)})
    assert (tmp_path / "run" / "eval" / "attack_suite.json").read_text() == json.dumps(results, indent=2)
    checkpoint.write_json(str(tmp_path / "history.json"), [{"epoch": 1}])
    assert (tmp_path / "history.json").read_text() == json.dumps([{"epoch": 1}], indent=2)


def test_train_turns_a_failed_write_into_one_line_exit_1(tmp_path):
    path = tmp_path / "config.json"
    path.mkdir()
    with pytest.raises(checkpoint.WriteError, match=f"^cannot write {path}: .*Is a directory") as e:
        checkpoint.write_json(str(path), {})
    assert "\n" not in str(e.value) and isinstance(e.value, checkpoint.RunFailed)   # RunFailed: exit code 1
