"""The check a SavedModel passes before it is loaded: every op in it is a pure numerical op, so
evaluating a model never runs code that came with it (docs/artifacts.md, "What is checked before a
SavedModel is loaded").

A SavedModel is a TensorFlow program, not data. ``tf.saved_model.load`` runs some of its
functions while loading (resource initialisers), and the evaluation calls ``serve`` on every
batch. An op such as WriteFile, ReadFile, MatchingFiles or PyFunc would then act on this machine.
So ``check_saved_model(path)`` reads ``saved_model.pb`` (the file TensorFlow's loader reads) without
running anything, and walks, in every meta graph:

- the graph's own nodes (placeholders, variable handles and initialisers, the calls of the
  signatures), and
- every function of ``graph_def.library``: ``serve``, every function it calls (through
  StatefulPartitionedCall, If, While...), and any function nothing calls. A called name that the
  library does not define is checked as an op's name: TensorFlow can run an op there.

Every op must be in ``ALLOWED_OPS``: arithmetic, comparisons, reductions, neural-network layers,
array reshaping, control flow and the model's own variables. Whatever is not listed is refused:
saved_model_cli scan's denylist (ReadFile, WriteFile, PrintV2), every other file or system op,
every reader and writer (datasets, summaries, checkpoints), PyFunc and EagerPyFunc, custom ops of
a shared library, and ops newer than this list.

One exception. Keras and tf.saved_model.save put the checkpoint saver into the file: one graph
node calls a function that writes the variables (SaveV2, MergeV2Checkpoints, ...) and one calls a
function that reads them back (RestoreV2). ``tf.saved_model.load`` uses neither (it restores the
variables with its own reader); they run only when a TF1-style loader restores the variables, or
someone saves. So SAVE_OPS are allowed only in functions that the node named by the file's
``saver_def.save_tensor_name`` reaches, RESTORE_OPS only in those that
``saver_def.restore_op_name`` reaches, and only while nothing else can call them (another graph
node or function, the loaded object, a gradient). A ``serve`` that calls SaveV2 is refused.

What the scan does not judge: what the allowed ops compute (a model may be wrong, slow or huge),
and the variables' values, which are data.

Usage::

    from eval.model_scan import check_saved_model, refused_ops, read_saved_model
    check_saved_model("my_savedmodel")      # UsageError naming the refused op and its function
    refused_ops(read_saved_model("my_savedmodel"))   # [(op, where), ...]; [] when it passes

TensorFlow's protobuf modules are imported inside ``read_saved_model`` only.
"""
from __future__ import annotations

import os

from cce_tf.cli_flags import UsageError

SAVED_MODEL_FILE = "saved_model.pb"

# Pure ops, by kind: derived from the ops of python -m cce_tf.export's SavedModels (the CNNs and
# ResNet-20, any N) and of Keras' common layers (Dense, Conv2D, DepthwiseConv2D, SeparableConv2D,
# pooling, BatchNormalization, LayerNormalization, Dropout, Concatenate, Add, Multiply, Permute,
# ZeroPadding2D, Rescaling and the built-in activations), and their close relatives (Min beside Max,
# If and While beside the calls).
_ALLOWED_BY_KIND = {
    # Plumbing of every traced function; the branches and bodies of control flow are library
    # functions, walked like the rest.
    "graph": "Const Identity IdentityN NoOp Placeholder PlaceholderWithDefault StopGradient "
             "PartitionedCall StatefulPartitionedCall If StatelessIf While StatelessWhile",
    # The model's own variables, in memory: the graph's initialisers assign them, functions read them.
    "variables": "VarHandleOp VarIsInitializedOp ReadVariableOp AssignVariableOp",
    "arithmetic": "Abs Add AddN AddV2 Sub Mul Neg RealDiv DivNoNan Square SquaredDifference Sqrt Rsqrt "
                  "Exp Log Log1p Erf Erfc Maximum Minimum Pow Reciprocal Sign Floor",
    "comparison": "Equal NotEqual Greater GreaterEqual Less LessEqual LogicalAnd LogicalOr LogicalNot "
                  "IsFinite Select SelectV2",
    "reduction": "Sum Mean Max Min Prod ArgMax ArgMin",
    "layers": "MatMul BatchMatMulV2 BiasAdd Conv2D DepthwiseConv2dNative MaxPool AvgPool FusedBatchNormV3 "
              "Relu Relu6 Elu Selu LeakyRelu Softplus Sigmoid Tanh Softmax LogSoftmax",
    "array": "Shape Reshape Squeeze ExpandDims Pack Unpack ConcatV2 StridedSlice Slice Transpose Pad PadV2 "
             "Fill ZerosLike OnesLike Tile GatherV2 Cast Range BroadcastTo",
}
ALLOWED_OPS = frozenset(op for ops in _ALLOWED_BY_KIND.values() for op in ops.split())

# The saver's functions only (see the module docstring): what Keras' and tf.saved_model.save's
# _traced_save and _traced_restore hold beyond ALLOWED_OPS.
SAVE_OPS = frozenset("SaveV2 MergeV2Checkpoints ShardedFilename StringJoin StaticRegexFullMatch "
                     "DisableCopyOnRead".split())
RESTORE_OPS = frozenset({"RestoreV2"})


def read_saved_model(path: str):
    """The SavedModel protobuf of the folder ``path``, parsed without running any of it; UsageError
    if saved_model.pb cannot be read."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    file = os.path.join(path, SAVED_MODEL_FILE)
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(file, "rb") as f:
            saved_model.ParseFromString(f.read())
    except (OSError, DecodeError) as e:
        raise UsageError(f"{file} cannot be read as a SavedModel ({type(e).__name__}: {e})") from None
    return saved_model


def _attr_functions(value) -> set[str]:
    """The functions a node attribute names (StatefulPartitionedCall's f, If's branches, While's
    cond and body), with those named inside their own attributes."""
    named = [value.func] if value.HasField("func") else list(value.list.func)
    found = set()
    for func in named:
        found.add(func.name)
        for inner in func.attr.values():
            found |= _attr_functions(inner)
    return found


def _named(node) -> set[str]:
    """What a node runs: its op, and the functions its attributes name."""
    return {node.op}.union(*(_attr_functions(value) for value in node.attr.values()))


def _callees(nodes, functions: dict) -> set[str]:
    """The library functions ``nodes`` call: named by an attribute, or used as an op."""
    return set().union(*(_named(node) for node in nodes)) & set(functions)


def _reachable(roots: set[str], calls: dict[str, set[str]]) -> set[str]:
    """``roots`` and every function they call, directly or not."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(calls[name])
    return seen


def _saver_exemptions(meta_graph, functions: dict, calls: dict[str, set[str]]) -> dict[str, frozenset]:
    """function name -> the saver's ops it may use: SAVE_OPS or RESTORE_OPS for a function reached
    only from the saver's save (restore) node, and from nothing else that can run."""
    saver = meta_graph.saver_def
    extra = {saver.save_tensor_name.split(":")[0]: SAVE_OPS, saver.restore_op_name.split(":")[0]: RESTORE_OPS}
    nodes = meta_graph.graph_def.node
    reached = {name: _reachable(_callees([n for n in nodes if n.name == name], functions), calls)
               for name in extra if name}
    saver_functions = set().union(*reached.values())
    library = meta_graph.graph_def.library
    callable_elsewhere = (_callees([n for n in nodes if n.name not in reached], functions)
                          | (set(functions) - saver_functions)
                          | set(meta_graph.object_graph_def.concrete_functions)
                          | {g.gradient_func for g in library.gradient}
                          | {g.gradient_func for g in library.registered_gradients})
    shared = _reachable(callable_elsewhere & set(functions), calls)
    exemptions = {}
    for name in saver_functions - shared:
        ops = [extra[node] for node, fns in reached.items() if name in fns]
        exemptions[name] = frozenset.intersection(*ops)
    return exemptions


def refused_ops(saved_model) -> list[tuple[str, str]]:
    """(op, where) for every op of the SavedModel protobuf outside ALLOWED_OPS (and the saver's
    exemptions), in file order, each (op, where) once; where: 'function NAME' or 'the graph'."""
    refused = []
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        calls = {name: _callees(f.node_def, functions) for name, f in functions.items()}
        exemptions = _saver_exemptions(meta_graph, functions, calls)
        places = [("the graph", graph.node, ALLOWED_OPS)] + [
            (f"function {name}", f.node_def, ALLOWED_OPS | exemptions.get(name, frozenset()))
            for name, f in functions.items()]
        for where, nodes, allowed in places:
            for node in nodes:
                # A name the library does not define is taken for an op's: TensorFlow can run a
                # registered op where a function is called.
                for op in sorted(_named(node) - set(functions) - allowed):
                    if (op, where) not in refused:
                        refused.append((op, where))
    return refused


def check_saved_model(path: str) -> None:
    """UsageError unless every op of the SavedModel folder ``path`` is allowed (module docstring);
    the message names the refused ops, where each was found, and how to proceed."""
    refused = refused_ops(read_saved_model(path))
    if refused:
        first = {}
        for op, where in refused:
            first.setdefault(op, where)
        found = ", ".join(f"{op} (in {where})" for op, where in list(first.items())[:5])
        more = f" and {len(first) - 5} more" if len(first) > 5 else ""
        raise UsageError(f"{path} was not loaded: its graph runs {found}{more}, outside the pure numerical "
                         "ops eval/model_scan.py allows (a SavedModel is a program); pass --trust_model if "
                         "you wrote this file")
