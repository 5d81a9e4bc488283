"""A SavedModel is a program: eval.model_scan refuses one whose graph holds an op outside the
allow-list of pure numerical ops, before TensorFlow loads it, and --trust_model skips the scan.
Fast: every SavedModel is built here, untrained (nothing depends on what it scores)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from tensorflow.python.framework import op_def_registry

from cce_tf.ensemble import build_ensemble
from cce_tf.export import standalone_model
from eval import model_scan
from eval.analyses import adaptive_detection, blackbox, detection
from eval import attack_suite as suite_cli
from eval.analyses.attack_suite import store

IMAGES = tf.TensorSpec([None, 28, 28, 1], tf.float32)

# Never pure numerics: saved_model_cli scan's denylist (ReadFile, WriteFile, PrintV2), then file and
# system ops, readers and writers (checkpoints, summaries, datasets, tables, debug dumps), and the
# ops that call back into Python.
NEVER_ALLOWED = """ReadFile WriteFile PrintV2 MatchingFiles Print ImmutableConst SaveV2 RestoreV2
MergeV2Checkpoints Save Restore SaveSlices RestoreSlice ShardedFilename WriteSummary WriteScalarSummary
CreateSummaryFileWriter TFRecordDataset TextLineDataset FixedLengthRecordDataset TFRecordReaderV2
WholeFileReaderV2 InitializeTableFromTextFileV2 LoadAndRemapMatrix DecodeProtoV2 DebugIdentityV3
SaveDatasetV2 LoadDataset SnapshotDatasetV2 PyFunc PyFuncStateless EagerPyFunc""".split()


class Classifier(tf.Module):
    """A linear classifier of 28x28x1 images whose ``serve`` also runs ``side_effect(x)``."""

    def __init__(self, side_effect):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32))
        self.side_effect = side_effect

    @tf.function(input_signature=[IMAGES])
    def serve(self, x):
        self.side_effect(x)
        return tf.reshape(x, [-1, 784]) @ self.w


def save(module, folder) -> str:
    tf.saved_model.save(module, str(folder))
    return str(folder)


def ops_of(saved_model) -> dict[str, set[str]]:
    return {f.signature.name: {n.op for n in f.node_def}
            for f in saved_model.meta_graphs[0].graph_def.library.function}


@pytest.fixture(scope="module")
def writer(tmp_path_factory):
    """(SavedModel whose serve writes ``written``, written): the issue's reproduction."""
    folder = tmp_path_factory.mktemp("writer")
    written = str(folder / "written.txt")
    return save(Classifier(lambda x: tf.io.write_file(written, "ran")), folder / "savedmodel"), written


def test_allow_list_holds_registered_ops_and_none_of_the_denied():
    registry = model_scan.ALLOWED_OPS | model_scan.SAVE_OPS | model_scan.RESTORE_OPS
    assert [op for op in sorted(registry) if op_def_registry.get(op) is None] == []   # no typo
    assert [op for op in NEVER_ALLOWED if op_def_registry.get(op) is None] == []
    assert model_scan.ALLOWED_OPS.isdisjoint(NEVER_ALLOWED)


@pytest.mark.parametrize("model", ["cnn", "resnet20", "sequential"])
def test_exported_models_pass(model, tmp_path):
    """The package's exports (cce_tf.export: standalone_model, then keras.Model.export) of both archs,
    and a plain Keras Sequential, hold allowed ops only, their saver's SaveV2 / RestoreV2 included."""
    if model == "sequential":
        net = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                                layers.BatchNormalization(), layers.MaxPooling2D(), layers.Dropout(0.5),
                                layers.Flatten(), layers.Dense(8, activation="relu"), layers.Dense(10)])
    else:
        shape = (28, 28, 1) if model == "cnn" else (32, 32, 3)
        net = standalone_model(build_ensemble(model, shape, 10, 2))
    net.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    saved = model_scan.read_saved_model(str(tmp_path / "sm"))
    assert model_scan.refused_ops(saved) == []
    assert {"SaveV2", "RestoreV2"} <= set().union(*ops_of(saved).values())


def test_cli_refuses_a_savedmodel_that_writes_a_file_before_loading_it(writer, tmp_path, monkeypatch, capsys):
    """The attack suite, as the issue ran it, and the three other tools that take a model file."""
    path, written = writer
    monkeypatch.setattr(tf.saved_model, "load", lambda *a, **k: pytest.fail("the SavedModel was loaded"))
    monkeypatch.chdir(tmp_path)   # where detection and the black box would write results/
    args = ["--run_dir", path, "--n_samples", "8", "--dataset", "fashion_mnist", "--verbose", "0"]
    for tool, extra in [(suite_cli, ["--attacks", "fgsm"]), (detection, []), (adaptive_detection, []),
                        (blackbox, [])]:
        assert tool.cli(["prog", *args, *extra]) == 2, tool.__name__
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        assert "WriteFile (in function __inference_serve_" in err[0] and "pass --trust_model" in err[0]
    assert not os.path.exists(written) and not os.path.exists(path + ".eval") and os.listdir(tmp_path) == []


def test_trust_model_loads_it_and_it_runs(writer, capsys):
    path, written = writer
    assert suite_cli.cli(["attack_suite", "--run_dir", path, "--attacks", "fgsm", "--n_samples", "8",
                             "--dataset", "fashion_mnist", "--verbose", "0", "--nosanity", "--trust_model"]) == 0
    assert open(written).read() == "ran"
    assert os.path.isfile(os.path.join(path + ".eval", store.RESULTS_FILE))


@tf.function
def write_elsewhere(x):
    tf.io.write_file(os.devnull, "ran")
    return x


def test_an_op_in_a_function_that_serve_calls_is_found(tmp_path):
    path = save(Classifier(lambda x: write_elsewhere(x)), tmp_path / "nested")   # a call, not an attribute
    saved = model_scan.read_saved_model(path)
    (op, where), = model_scan.refused_ops(saved)
    callee = where.removeprefix("function ")
    ops = ops_of(saved)
    serve = [name for name in ops if name.startswith("__inference_serve_")]
    assert op == "WriteFile" and callee.startswith("__inference_write_elsewhere_") and len(serve) == 1
    assert "WriteFile" not in ops[serve[0]] and "StatefulPartitionedCall" in ops[serve[0]]
    with pytest.raises(model_scan.UsageError, match=f"WriteFile \\(in function {callee}\\)"):
        model_scan.check_saved_model(path)


def test_saver_ops_only_in_the_savers_own_functions(tmp_path):
    """SaveV2 writes files: refused in serve; allowed in the saver's _traced_save only while
    nothing else calls it, and that function gets no other op."""
    def checkpoint(x):
        tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt"), tensor_names=["x"], shape_and_slices=[""],
                          tensors=[x])
    saved = model_scan.read_saved_model(save(Classifier(checkpoint), tmp_path / "saver"))
    refused = model_scan.refused_ops(saved)
    assert [op for op, _ in refused] == ["SaveV2"] and refused[0][1].startswith("function __inference_serve_")
    # The saver node made to call serve's signature: serve is still the loaded object's, so refused.
    meta_graph = saved.meta_graphs[0]
    serving = next(n.name for n in meta_graph.graph_def.node
                   if "f" in n.attr and n.attr["f"].func.name.startswith("__inference_signature_wrapper"))
    meta_graph.saver_def.save_tensor_name = serving + ":0"
    assert ("SaveV2", refused[0][1]) in model_scan.refused_ops(saved)
    # A WriteFile slipped into the saver's own function is refused: the exemption is SAVE_OPS only.
    saved = model_scan.read_saved_model(save(Classifier(lambda x: None), tmp_path / "plain"))
    assert model_scan.refused_ops(saved) == []
    traced_save = next(f for f in saved.meta_graphs[0].graph_def.library.function
                       if f.signature.name.startswith("__inference__traced_save"))
    traced_save.node_def.add(name="sneak", op="WriteFile")
    assert model_scan.refused_ops(saved) == [("WriteFile", f"function {traced_save.signature.name}")]


def test_a_call_of_a_name_outside_the_library_is_checked_as_an_op(tmp_path):
    """TensorFlow can run a registered op where a function is called by name."""
    saved = model_scan.read_saved_model(save(Classifier(lambda x: None), tmp_path / "plain"))
    call = next(n for n in saved.meta_graphs[0].graph_def.node if n.op == "StatefulPartitionedCall")
    call.attr["f"].func.name = "WriteFile"
    assert model_scan.refused_ops(saved) == [("WriteFile", "the graph")]


def test_an_unreadable_saved_model_pb_is_one_line(tmp_path):
    os.makedirs(tmp_path / "broken")
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"\xff\xff\xff\xff")
    with pytest.raises(model_scan.UsageError, match="saved_model.pb cannot be read as a SavedModel"):
        model_scan.check_saved_model(str(tmp_path / "broken"))
