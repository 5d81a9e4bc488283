"""The package's one atomic writer (cce_tf.atomic): a reader sees the old file or the new one,
and each writer keeps its bytes."""
import json
import os

import numpy as np
import pytest

from cce_tf import atomic, train
from eval import attack_suite, common


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
    """eval.common.write_json rounds (jsonable) and ends in a newline; attack_suite.json and the
    training files are json.dump(indent=2) as they were."""
    obj = {"acc": 0.1 + 0.2, "n": np.int64(3)}
    common.write_json(str(tmp_path / "c.json"), obj)
    assert (tmp_path / "c.json").read_text() == '{\n  "acc": 0.3,\n  "n": 3\n}\n'
    results = {"run_dir": "r", "attacks": {"pgd": {"robust_accuracy": 0.1 + 0.2}}}
    attack_suite.write_results(str(tmp_path / "run"), results, {"pgd": np.ones(2, bool)})
    assert (tmp_path / "run" / "eval" / "attack_suite.json").read_text() == json.dumps(results, indent=2)
    train._write_json(str(tmp_path / "history.json"), [{"epoch": 1}])
    assert (tmp_path / "history.json").read_text() == json.dumps([{"epoch": 1}], indent=2)


def test_train_turns_a_failed_write_into_one_line_exit_1(tmp_path):
    path = tmp_path / "config.json"
    path.mkdir()
    with pytest.raises(train.WriteError, match=f"^cannot write {path}: .*Is a directory") as e:
        train._write_json(str(path), {})
    assert "\n" not in str(e.value) and isinstance(e.value, train.RunFailed)   # RunFailed: exit code 1
