"""Data sets by name: numpy arrays in [0, 1] and tf.data pipelines with the paper's augmentation.

Usage::

    from cce_tf import data

    x, y = data.load("cifar10", "train")          # float32 NHWC in [0, 1], int64 labels
    meta = data.info("cifar10")                   # (32, 32, 3), num_classes=10, flip=True
    ds = data.train_dataset(x, y, batch_size=128, flip=meta.flip, seed=0)
    x_test, y_test = data.load("cifar10", "test")
    ds_test = data.eval_dataset(x_test, y_test, batch_size=500)

Parts, top to bottom:

1. ``DataError``, ``DATASETS``, ``DatasetInfo`` and ``info(name)``: names, shapes, class counts.
2. Where files live: ``$CCE_DATA_DIR`` (default ``~/.keras/datasets``) for MNIST and CIFAR, with a
   fall-back download through ``keras.utils.get_file`` unless ``CCE_OFFLINE=1``;
   ``$CCE_FASHION_MNIST_DIR`` (default ``/usr/share/datasets/fashion-mnist``, Debian's
   ``dataset-fashion-mnist``) for Fashion-MNIST.
3. Readers for the original formats: IDX ``.gz`` (Fashion-MNIST), Keras' ``mnist.npz``, the CIFAR
   python pickles read straight from the ``.tar.gz`` (or from Keras' extracted folder). The pickles
   are read by an unpickler that knows only the globals a CIFAR batch needs (numpy's array
   reconstruction), so a tampered archive is refused before any of its code can run.
4. ``load(name, split)``: cached in-process, returns read-only arrays (contract 1 of DESIGN.md).
   An archive whose SHA-256 is not the official one still loads, with a one-line warning on
   stderr; ``source_digest(name)`` gives the file and its digest for a run's config.json.
5. ``train_dataset`` (shuffle, batch, random 10% shifts and optional horizontal flips, as Keras'
   ``ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=...)`` in
   the paper's code) and ``eval_dataset`` (in order, no augmentation).

Every missing, truncated or corrupt file raises ``DataError`` with a one-line message that names the
file and the folder it belongs in; errors from gzip / tarfile / pickle / numpy never surface raw.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import os
import pickle
import struct
import sys
import tarfile
import zlib
from typing import TYPE_CHECKING, Optional

import numpy as np

# tensorflow and keras are imported inside the functions that need them: a CLI can then check
# its input against DATASETS and info() in milliseconds, before the seconds-long TF import.
if TYPE_CHECKING:
    import tensorflow as tf

# --------------------------------------------------------------------------------------------------
# 1. Names, shapes, errors
# --------------------------------------------------------------------------------------------------


class DataError(ValueError):
    """A data file is missing, truncated or corrupt. The message is one line naming the file."""

    def __init__(self, message: str):
        # One line, always: these messages end up in CLI "exit 2" lines and logs.
        super().__init__(" ".join(str(message).split()))


DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
# Images per split of the standard files (what a study plans with before any file is read).
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}
TEST_SIZES = {name: 10000 for name in DATASETS}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and the augmentation need to know about a data set."""

    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int
    flip: bool  # random horizontal flips in training augmentation (CIFAR only, as in the paper)


_INFO = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, False),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, False),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, True),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100, True),
}
SPLITS = ("train", "test")


def info(name: str) -> DatasetInfo:
    """Shape, class count and flip setting of data set ``name``; ValueError for an unknown name."""
    if name not in _INFO:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    return _INFO[name]


# --------------------------------------------------------------------------------------------------
# 2. Where files live
# --------------------------------------------------------------------------------------------------

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FASHION_HINT = "apt-get install dataset-fashion-mnist (or `make data`)"


@dataclasses.dataclass(frozen=True)
class _Source:
    """One downloadable file, as Keras' own loaders name it (so Keras' cache is reused)."""

    filename: str
    origin: str
    sha256: str
    folder: Optional[str] = None  # top folder inside the archive (= Keras' extracted folder)


_SOURCES = {
    "mnist": _Source(
        "mnist.npz",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
    "cifar10": _Source(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        "cifar-10-batches-py",
    ),
    "cifar100": _Source(
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        "cifar-100-python",
    ),
}


def data_dir() -> str:
    """Folder searched for mnist.npz and the CIFAR archives: $CCE_DATA_DIR, else Keras' cache."""
    if os.environ.get("CCE_DATA_DIR"):
        return os.path.abspath(os.path.expanduser(os.environ["CCE_DATA_DIR"]))
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "datasets")


def fashion_mnist_dir() -> str:
    """Folder holding Fashion-MNIST's four IDX .gz files."""
    return os.path.abspath(os.environ.get("CCE_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)


def _offline() -> bool:
    return os.environ.get("CCE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _or_set(env: str) -> str:
    """The "(or set VAR)" hint, unless the user already set VAR."""
    return "" if os.environ.get(env) else f" (or set {env})"


def _locate(name: str) -> str:
    """Path of the archive (or Keras' extracted folder) for mnist / cifar10 / cifar100.

    Looks in data_dir(); if absent, downloads with keras.utils.get_file unless CCE_OFFLINE is set.
    """
    src, folder = _SOURCES[name], data_dir()
    archive = os.path.join(folder, src.filename)
    if os.path.isfile(archive):
        return archive
    if src.folder:
        # Keras 2 extracts to datasets/<folder>/, Keras 3 to datasets/<folder>-target/<folder>/.
        for extracted in (
            os.path.join(folder, src.folder),
            os.path.join(folder, src.folder + "-target", src.folder),
        ):
            if os.path.isdir(extracted):
                return extracted
    where = f"put it in {folder}" + _or_set("CCE_DATA_DIR")
    if _offline():
        raise DataError(f"{src.filename} not found: {where}; CCE_OFFLINE is set, so no download")
    try:
        # One try, no retries: a machine without network should fail fast with a clear message.
        import keras

        return keras.utils.get_file(fname=src.filename, origin=src.origin, file_hash=src.sha256)
    except Exception as e:  # noqa: BLE001 - get_file raises bare Exception on network errors
        raise DataError(
            f"{src.filename} not found and download from {src.origin} failed "
            f"({type(e).__name__}: {str(e)[:200]}): {where}"
        ) from e


# --------------------------------------------------------------------------------------------------
# 3. Readers of the original formats (each returns uint8 NHWC images and int64 labels)
# --------------------------------------------------------------------------------------------------


def _check_labels(path: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes (http://yann.lecun.com/exdb/mnist/ format)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation is EOF
        raise DataError(f"{path}: unreadable gzip ({type(e).__name__}: {e})") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    expected_magic = 0x0800 | ndim  # 0x08 = unsigned byte, then the number of dimensions
    if magic != expected_magic:
        raise DataError(f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != size:
        raise DataError(f"{path}: {len(raw)} bytes but its IDX header {dims} says {size}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_fashion_mnist(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _FASHION_FILES[split]
    paths = [os.path.join(folder, images_name), os.path.join(folder, labels_name)]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(
                f"{os.path.basename(path)} not found: put it in {folder}"
                + _or_set("CCE_FASHION_MNIST_DIR")
                + f": {_FASHION_HINT}"
            )
    x, y = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
    if x.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]}: images are {x.shape[1:]}, expected (28, 28)")
    _check_labels(paths[1], x, y, 10)
    return x[..., None], y.astype(np.int64)


def _read_mnist(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f[f"x_{split}"], f[f"y_{split}"]
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, KeyError, ValueError, OSError, ...
        raise DataError(f"{path}: not a valid mnist.npz ({type(e).__name__}: {e})") from e
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{path}: x_{split} is {x.dtype}{x.shape}, expected uint8 (n, 28, 28)")
    y = np.asarray(y).reshape(-1).astype(np.int64)
    _check_labels(path, x, y, 10)
    return x[..., None], y


try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 1.26 has no numpy._core
    from numpy.core.multiarray import _reconstruct


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` limited to the one use pickle makes of it (see _CIFAR_GLOBALS)."""
    if encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode with encoding {encoding!r}, where pickle writes latin1")
    return text.encode("latin1")


# Every global a CIFAR batch pickle may name (pickles build dicts, lists, ints and bytes without
# any). The official archives are Python 2 protocol-2 pickles of {b"data": uint8 ndarray, ...}:
_CIFAR_GLOBALS = {
    # ndarray.__reduce__: _reconstruct(ndarray, (0,), b"b"), then __setstate__ with the raw bytes;
    # numpy < 2 writes the numpy.core path (the official archives), numpy >= 2 numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,  # the class _reconstruct is asked to build
    ("numpy", "dtype"): np.dtype,  # the array's dtype, pickled as dtype("u1", False, True)
    # Python 3 writes bytes into a protocol < 3 pickle as _codecs.encode(str, "latin1"): needed by
    # batches re-pickled with Python 3 (as the tests' fixtures are), never by the originals.
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch; any global outside _CIFAR_GLOBALS raises DataError.

    Every callable a pickle can run (REDUCE, NEWOBJ, BUILD's __setstate__, copyreg extensions)
    must first be looked up through find_class, so refusing it here means no code of the file
    ever runs ("Restricting Globals" in the docs of the pickle module).
    """

    def __init__(self, blob: bytes, where: str):
        # The archives are Python 2 pickles of dicts with bytes keys (hence "bytes").
        super().__init__(io.BytesIO(blob), encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str):
        found = _CIFAR_GLOBALS.get((module, name))
        if found is None:
            raise DataError(
                f"{self.where} holds a pickle that refers to {f'{module}.{name}'[:100]}, "
                "which a CIFAR archive never does: refusing to load it"
            )
        return found


def _cifar_members(name: str, split: str) -> list[str]:
    """Member paths inside the archive (relative to the archive's top folder)."""
    if name == "cifar100":
        return [split]
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _read_cifar(name: str, path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python pickles, from the .tar.gz (without extracting) or from the extracted folder."""
    src = _SOURCES[name]
    label_key = b"fine_labels" if name == "cifar100" else b"labels"
    xs, ys = [], []
    try:
        tar = tarfile.open(path, "r:gz") if os.path.isfile(path) else None
        try:
            for member in _cifar_members(name, split):
                if tar is None:
                    with open(os.path.join(path, member), "rb") as f:
                        blob = f.read()
                else:
                    f = tar.extractfile(f"{src.folder}/{member}")  # KeyError if missing
                    if f is None:
                        raise KeyError(f"{src.folder}/{member} is not a regular file")
                    blob = f.read()
                # A refused global raises DataError, re-raised below with its own message.
                batch = _CifarUnpickler(blob, f"{path}: {member}").load()
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                if data.ndim != 2 or data.shape[1] != 3072:
                    raise ValueError(f"{member}: data has shape {data.shape}, expected (n, 3072)")
                xs.append(data)
                ys.append(np.asarray(batch[label_key], dtype=np.int64))
        finally:
            if tar is not None:
                tar.close()
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: incomplete extracted folder, {e.filename} is missing") from e
    except Exception as e:  # noqa: BLE001 - tarfile, gzip, zlib, EOF, pickle, KeyError, ...
        if isinstance(e, KeyError):
            what = f"member {e.args[0]!s} missing"
        else:
            what = f"{type(e).__name__}: {e}"
        raise DataError(f"{path}: corrupt or truncated CIFAR data ({what})") from e
    # Rows are row-major CHW (1024 R, 1024 G, 1024 B); the contract wants NHWC.
    x = np.ascontiguousarray(np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    y = np.concatenate(ys)
    _check_labels(path, x, y, info(name).num_classes)
    return x, y


# --------------------------------------------------------------------------------------------------
# 4. load(): the public entry point, with an in-process cache
# --------------------------------------------------------------------------------------------------


def _stamp(path: str) -> tuple:
    """Changes when the file (or any file in the folder) changes, so the cache never goes stale."""
    if os.path.isdir(path):
        return tuple(
            (e.name, e.stat().st_mtime_ns, e.stat().st_size)
            for e in sorted(os.scandir(path), key=lambda e: e.name)
            if e.is_file()
        )
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)  # one data set's train + test, plus room; CIFAR train is 600 MB
def _load_cached(name: str, split: str, path: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    del stamp  # only part of the cache key
    if name == "fashion_mnist":
        x, y = _read_fashion_mnist(path, split)
    elif name == "mnist":
        x, y = _read_mnist(path, split)
    else:
        x, y = _read_cifar(name, path, split)
    x = x.astype(np.float32)
    x /= 255.0
    # Read-only: every caller shares these arrays; use .copy() to get a writable one.
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load(name: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of data set ``name``: x float32 NHWC in [0, 1], y int64 class ids; both read-only.

    Raises ValueError for an unknown name or split, DataError for a missing or corrupt file.
    """
    info(name)  # validates the name
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if name == "fashion_mnist":
        path = fashion_mnist_dir()
        # A missing folder or file is reported by the reader, with the install hint.
        stamp = _stamp(path) if os.path.isdir(path) else ()
    else:
        path = _locate(name)
        try:
            stamp = _stamp(path)
        except OSError as e:
            raise DataError(f"{path}: cannot stat ({e.strerror})") from e
    x, y = _load_cached(name, split, path, stamp)
    if name in _SOURCES and os.path.isfile(path):
        # After the read: a file that fails to load gets its error alone, not a warning as well.
        _warn_if_unofficial(name, path, stamp)
    return x, y


@functools.lru_cache(maxsize=16)
def _sha256(path: str, stamp: tuple) -> str:
    """Hex SHA-256 of a file; ``stamp`` (from _stamp) makes a changed file hashed again."""
    del stamp  # only part of the cache key: CIFAR-10's 170 MB is hashed once per process
    from cce_tf.fingerprint import file_sha256

    try:
        return file_sha256(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e


_WARNED: set[tuple[str, str]] = set()  # (path, sha256) already reported as not official


def _warn_if_unofficial(name: str, path: str, stamp: tuple) -> None:
    """One stderr line per file and process when an archive is not the one Keras downloads.

    A warning, not an error: re-packed archives (and the tests' tiny ones) are legitimate, and
    the restricted unpickler, not the digest, is what keeps a tampered archive from running code.
    """
    src, sha = _SOURCES[name], _sha256(path, stamp)
    if sha == src.sha256 or (path, sha) in _WARNED:
        return
    _WARNED.add((path, sha))
    print(
        f"warning: {path} is not the official {src.filename} (sha256 {sha[:16]}..., "
        f"expected {src.sha256[:16]}...): loading it anyway",
        file=sys.stderr,
        flush=True,
    )


def source_digest(name: str) -> Optional[dict]:
    """Which file(s) data set ``name`` is read from and their SHA-256, for a run's config.json.

    mnist / cifar10 / cifar100 read from their archive::

        {"file": "/.../cifar-10-python.tar.gz", "sha256": "6d95...", "official": True}

    ``official`` says whether the digest is the one of the file Keras downloads. Data read from a
    folder (Fashion-MNIST's IDX files, Keras' extracted CIFAR folder) has no single archive and no
    digest to compare with: ``sha256`` and ``official`` are None, and ``files`` maps the name of
    each file ``load`` reads (both splits) to its SHA-256::

        {"file": "/usr/share/datasets/fashion-mnist", "sha256": None, "official": None,
         "files": {"train-images-idx3-ubyte.gz": "...", ...}}

    Never returns None today; Optional leaves room for a data set without files. Finds the files
    as ``load`` does (so may download when ``load`` would); digests are cached per file version.
    Raises ValueError for an unknown name, DataError for a missing file.
    """
    info(name)  # validates the name
    if name == "fashion_mnist":
        folder = fashion_mnist_dir()
        members = [f for split in SPLITS for f in _FASHION_FILES[split]]
        hint = _or_set("CCE_FASHION_MNIST_DIR") + f": {_FASHION_HINT}"
    else:
        folder = _locate(name)
        if os.path.isfile(folder):
            try:
                sha = _sha256(folder, _stamp(folder))
            except OSError as e:
                raise DataError(f"{folder}: cannot stat ({e.strerror})") from e
            return {"file": folder, "sha256": sha, "official": sha == _SOURCES[name].sha256}
        members = [m for split in SPLITS for m in _cifar_members(name, split)]
        hint = ""
    files = {}
    for member in members:
        path = os.path.join(folder, member)
        if not os.path.isfile(path):
            raise DataError(f"{member} not found: put it in {folder}{hint}")
        files[member] = _sha256(path, _stamp(path))
    return {"file": folder, "sha256": None, "official": None, "files": files}


# --------------------------------------------------------------------------------------------------
# 5. tf.data pipelines
# --------------------------------------------------------------------------------------------------


def _as_arrays(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y).astype(np.int64, copy=False)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"expected x [N,H,W,C] and y [N], got x{x.shape} and y{y.shape}")
    return x, y


def _gather(images: tf.Tensor, labels: tf.Tensor):
    import tensorflow as tf

    def fn(idx):
        return tf.gather(images, idx), tf.gather(labels, idx)

    return fn


def train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    augment: bool = True,
    flip: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    drop_remainder: bool = True,
    shift: float = 0.1,
    epoch: Optional[int] = None,
    skip: int = 0,
) -> tf.data.Dataset:
    """Training batches (x, y): shuffled each epoch, then randomly shifted (and flipped).

    Augmentation, per batch after batching (one op per batch instead of one per image): shifts of
    up to ``shift`` x height / width with nearest fill (``keras.layers.RandomTranslation``) and, if
    ``flip``, left-right flips with probability 1/2 (``keras.layers.RandomFlip("horizontal")``).
    Output stays float32 in [0, 1], labels int64.

    An epoch (its order and every batch's shifts and flips) is a pure function of ``seed`` and an
    epoch number. Without ``epoch``, each new iterator is one epoch whose number is drawn from a
    stream seeded by ``seed``: the same ``seed`` gives the same batches, and iterating again gives
    a fresh epoch, as Keras' ``fit`` expects. With ``epoch``, the dataset is epochs ``epoch``,
    ``epoch + 1``, ... back to back without end (give ``fit`` its ``steps_per_epoch``), less the
    first ``skip`` batches: a run resumed after ``skip`` steps of ``epoch`` sees exactly the batches
    it would have seen.
    """
    import keras
    import tensorflow as tf

    x, y = _as_arrays(x, y)
    images, labels = tf.constant(x), tf.constant(y)
    gather = _gather(images, labels)

    def one_epoch(key):
        """(indices, key) per batch of the epoch with stateless key ``key`` ([2] int64)."""
        order_key, batch_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        order = tf.range(len(x), dtype=tf.int64)
        if shuffle:
            # A permutation of indices, not of images: no second copy of the data set.
            order = tf.random.experimental.index_shuffle(order, order_key, len(x) - 1)
        batches = tf.data.Dataset.from_tensor_slices(order)
        batches = batches.batch(batch_size, drop_remainder=drop_remainder)
        return batches.enumerate().map(
            lambda b, idx: (idx, tf.random.experimental.stateless_fold_in(batch_key, b))
        )

    if epoch is None:
        numbers = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    else:
        numbers = tf.data.Dataset.counter(epoch)
    ds = numbers.map(lambda e: tf.stack([tf.constant(seed, tf.int64), e])).flat_map(one_epoch)
    ds = ds.skip(skip)
    if not augment or (shift <= 0 and not flip):
        ds = ds.map(lambda idx, key: gather(idx), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    # The Keras layers do the image work; the randomness is ours. Calling the layers directly lets
    # parallel map calls race on their shared seed-generator variable, so even the first batch
    # differs between two runs with the same seed. Instead each batch has its own stateless key
    # and draws with the layers' distributions.
    translate = None
    if shift > 0:
        translate = keras.layers.RandomTranslation(shift, shift, fill_mode="nearest")
    flipper = keras.layers.RandomFlip("horizontal") if flip else None

    def augment_batch(idx, key):
        xb, yb = gather(idx)
        shape = tf.shape(xb)
        seeds = tf.random.experimental.stateless_split(key, 2)
        out = xb
        if translate is not None:
            # As RandomTranslation.get_random_transformation: U(-shift, shift) x size, (dx, dy).
            fraction = tf.random.stateless_uniform([shape[0], 2], seeds[0], -shift, shift)
            size = tf.cast(tf.stack([shape[2], shape[1]]), tf.float32)
            out = translate.transform_images(
                out, {"translations": fraction * size, "input_shape": shape}
            )
        if flipper is not None:
            flips = tf.random.stateless_uniform([shape[0], 1, 1, 1], seeds[1]) < 0.5
            out = flipper.transform_images(out, {"flips": flips, "input_shape": shape})
        # Bilinear interpolation can overshoot 1 by a rounding error; the contract says [0, 1].
        out = tf.clip_by_value(out, 0.0, 1.0)
        out.set_shape(xb.shape)
        return out, yb

    ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Evaluation batches (x, y) in order, unchanged, including the last partial batch."""
    import tensorflow as tf

    x, y = _as_arrays(x, y)
    ds = tf.data.Dataset.range(len(x)).batch(batch_size)
    ds = ds.map(_gather(tf.constant(x), tf.constant(y)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
