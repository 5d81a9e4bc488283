"""Tests of cce_tf.data: readers on tiny fixtures in the real formats, errors, tf.data pipelines."""

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import shlex
import struct
import tarfile

import keras
import numpy as np
import pytest

from cce_tf import data
from conftest import train_cli

# --------------------------------------------------------------------------------------------------
# Fixtures: tiny files in the real formats
# --------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test: offline, an empty data folder, no real download, a cold cache."""
    monkeypatch.setenv("CCE_OFFLINE", "1")
    monkeypatch.setenv("CCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CCE_FASHION_MNIST_DIR", raising=False)

    downloads = []

    def no_network(fname, origin, **kwargs):
        downloads.append(origin)  # data.py wraps what get_file raises, so record the call instead
        raise AssertionError("keras.utils.get_file called: the tests must never touch the network")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    data._load_cached.cache_clear()
    yield
    data._load_cached.cache_clear()
    assert downloads == [], "a download was attempted"


def chw_pattern(n, seed):
    """uint8 images [n, 3, 32, 32] whose every pixel encodes (image, channel, row, column)."""
    i, c, h, w = np.meshgrid(*(np.arange(k) for k in (n, 3, 32, 32)), indexing="ij")
    return ((seed * 31 + i * 17 + c * 89 + h * 7 + w) % 256).astype(np.uint8)


def cifar_batch(n, seed, label_key, num_classes):
    x = chw_pattern(n, seed)
    labels = [int(v) for v in (np.arange(n) + seed) % num_classes]
    # Python 2-style pickle of a dict with bytes keys and the rows flattened CHW, as the originals.
    blob = pickle.dumps({b"data": x.reshape(n, 3072), label_key: labels}, protocol=2)
    return blob, x, np.array(labels)


def py2_batch(rows, labels):
    """A CIFAR-10 batch pickled byte for byte as Python 2's cPickle wrote the official archives.

    Unlike the Python 3 fixtures above it names numpy.core.multiarray (numpy < 2) and holds raw
    py2 strings, so no _codecs.encode; n < 256 and labels < 256 keep the opcodes short.
    """
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x01"
        b"cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87Rq\x03"
        b"(K\x01K" + bytes([len(rows)]) + b"M" + struct.pack("<H", 3072) + b"\x86"
        b"cnumpy\ndtype\nq\x04U\x02u1K\x00K\x01\x87Rq\x05"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89T" + struct.pack("<I", rows.nbytes) + rows.tobytes() + b"tb"
    )
    ints = b"".join(b"K" + bytes([int(v)]) for v in labels)
    labels = b"U\x06labels]q\x06(" + ints + b"e"
    return b"\x80\x02}q\x00(U\x04data" + array + labels + b"U\x0bbatch_labelU\x01bu."


def write_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            tar.addfile(ti, io.BytesIO(blob))


def make_cifar10(folder, extracted=False):
    """cifar-10-python.tar.gz with 5 train batches of 4 images and a test batch of 3."""
    os.makedirs(folder, exist_ok=True)
    members, xs, ys = {}, [], []
    for k in range(1, 6):
        blob, x, y = cifar_batch(4, k, b"labels", 10)
        members[f"cifar-10-batches-py/data_batch_{k}"] = blob
        xs.append(x)
        ys.append(y)
    blob, xt, yt = cifar_batch(3, 9, b"labels", 10)
    members["cifar-10-batches-py/test_batch"] = blob
    if extracted:
        for name, blob in members.items():
            os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(blob)
    else:
        write_tar(os.path.join(folder, "cifar-10-python.tar.gz"), members)
    return (np.concatenate(xs), np.concatenate(ys)), (xt, yt)


def make_cifar100(folder):
    os.makedirs(folder, exist_ok=True)
    train, x, y = cifar_batch(6, 1, b"fine_labels", 100)
    test, xt, yt = cifar_batch(2, 2, b"fine_labels", 100)
    write_tar(
        os.path.join(folder, "cifar-100-python.tar.gz"),
        {"cifar-100-python/train": train, "cifar-100-python/test": test},
    )
    return (x, y), (xt, yt)


def idx_bytes(array, magic=None):
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_fashion(folder, n_train=5, n_test=3):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        y = (np.arange(n) * 3) % 10
        images, labels = data._FASHION_FILES[split]
        for name, arr in ((images, x), (labels, y)):
            with gzip.open(os.path.join(folder, name), "wb") as f:
                f.write(idx_bytes(arr))
        out[split] = (x, y)
    return out


# --------------------------------------------------------------------------------------------------
# Names and shapes
# --------------------------------------------------------------------------------------------------


def test_info_and_unknown_names():
    assert data.DATASETS == ("mnist", "fashion_mnist", "cifar10", "cifar100")
    assert data.info("cifar100").num_classes == 100
    assert data.info("cifar10").input_shape == (32, 32, 3) and data.info("cifar10").flip
    assert data.info("fashion_mnist").input_shape == (28, 28, 1) and not data.info("mnist").flip
    for bad in (lambda: data.info("svhn"), lambda: data.load("svhn")):
        with pytest.raises(ValueError, match="cifar100") as err:
            bad()
        assert not isinstance(err.value, data.DataError) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="split"):
        data.load("mnist", "validation")


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def check_xy(x, y, shape):
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape[1:] == shape and y.shape == (len(x),)
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("extracted", [False, True], ids=["tar.gz", "extracted-folder"])
def test_cifar10_nhwc_pixel_order_and_labels(tmp_path, extracted):
    (x_chw, y), (xt_chw, yt) = make_cifar10(tmp_path / "data", extracted=extracted)
    x, got_y = data.load("cifar10", "train")
    check_xy(x, got_y, (32, 32, 3))
    assert len(x) == 20
    # Pixel (row h, column w, channel c) of the NHWC result is byte (c, h, w) of the CHW row.
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), x_chw.transpose(0, 2, 3, 1))
    assert x[3, 5, 7, 2] == np.float32(x_chw[3, 2, 5, 7]) / np.float32(255)
    np.testing.assert_array_equal(got_y, y)
    xt, got_yt = data.load("cifar10", "test")
    np.testing.assert_array_equal(np.rint(xt * 255).astype(np.uint8), xt_chw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got_yt, yt)


def test_python2_pickles_as_in_the_official_archives(tmp_path):
    (tmp_path / "data").mkdir()
    x = chw_pattern(3, 4)
    blob = py2_batch(x.reshape(3, 3072), [4, 0, 9])
    assert pickle.loads(blob, encoding="bytes")[b"labels"] == [4, 0, 9]  # the fixture is valid
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    write_tar(archive, {"cifar-10-batches-py/test_batch": blob})
    xt, yt = data.load("cifar10", "test")
    np.testing.assert_array_equal(np.rint(xt * 255).astype(np.uint8), x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(yt, [4, 0, 9])


def test_cifar100_fine_labels(tmp_path):
    (x_chw, y), (xt_chw, yt) = make_cifar100(tmp_path / "data")
    x, got_y = data.load("cifar100", "train")
    check_xy(x, got_y, (32, 32, 3))
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), x_chw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(data.load("cifar100", "test")[1], yt)


def test_mnist_npz(tmp_path):
    (tmp_path / "data").mkdir()
    rng = np.random.RandomState(1)
    arrays = {
        "x_train": rng.randint(0, 256, (6, 28, 28)).astype(np.uint8),
        "y_train": np.arange(6).astype(np.uint8),
        "x_test": rng.randint(0, 256, (2, 28, 28)).astype(np.uint8),
        "y_test": np.array([9, 8], np.uint8),
    }
    np.savez(tmp_path / "data" / "mnist.npz", **arrays)
    x, y = data.load("mnist", "test")
    check_xy(x, y, (28, 28, 1))
    np.testing.assert_array_equal(np.rint(x[..., 0] * 255), arrays["x_test"])
    np.testing.assert_array_equal(y, [9, 8])


def test_fashion_mnist_idx(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    expected = make_fashion(folder)
    monkeypatch.setenv("CCE_FASHION_MNIST_DIR", str(folder))
    for split in ("train", "test"):
        x, y = data.load("fashion_mnist", split)
        check_xy(x, y, (28, 28, 1))
        np.testing.assert_array_equal(np.rint(x[..., 0] * 255), expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(data.FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist():
    x, y = data.load("fashion_mnist", "train")
    check_xy(x, y, (28, 28, 1))
    assert len(x) == 60000 and np.bincount(y).tolist() == [6000] * 10
    xt, yt = data.load("fashion_mnist", "test")
    assert xt.shape == (10000, 28, 28, 1) and np.bincount(yt).tolist() == [1000] * 10


def test_cache_is_shared_read_only_and_follows_the_file(tmp_path):
    make_cifar100(tmp_path / "data")
    x1, y1 = data.load("cifar100")
    x2, _ = data.load("cifar100")
    assert x2 is x1
    with pytest.raises(ValueError):
        x1[0, 0, 0, 0] = 0.5  # callers cannot corrupt the cache
    with pytest.raises(ValueError):
        y1[0] = 3
    # A replaced file is read again.
    archive = tmp_path / "data" / "cifar-100-python.tar.gz"
    blob, _, _ = cifar_batch(1, 5, b"fine_labels", 100)
    write_tar(archive, {"cifar-100-python/train": blob, "cifar-100-python/test": blob})
    os.utime(archive, ns=(1, 1))
    assert len(data.load("cifar100")[0]) == 1


# --------------------------------------------------------------------------------------------------
# Errors: one line, naming the file (and the folder where it belongs)
# --------------------------------------------------------------------------------------------------


def one_line_error(fn, *needles):
    with pytest.raises(data.DataError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, message
    return message


@pytest.mark.parametrize(
    "name,filename",
    [
        ("cifar10", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar-100-python.tar.gz"),
        ("mnist", "mnist.npz"),
    ],
)
def test_missing_file_offline_names_file_and_folder(tmp_path, name, filename):
    # _isolated replaced keras.utils.get_file with a function that fails the test if called.
    one_line_error(lambda: data.load(name), filename, tmp_path / "data")


def test_missing_file_default_folder_mentions_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CCE_DATA_DIR")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    one_line_error(
        lambda: data.load("cifar100"),
        "cifar-100-python.tar.gz",
        os.path.join(tmp_path, "keras", "datasets"),
        "CCE_DATA_DIR",
    )


def test_failed_download_names_file_and_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CCE_OFFLINE")
    calls = []

    def offline_get_file(fname, origin, **kwargs):
        calls.append((fname, origin))
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3]\nname resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    one_line_error(lambda: data.load("cifar10"), "cifar-10-python.tar.gz", tmp_path / "data")
    origin = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert calls == [("cifar-10-python.tar.gz", origin)]


def test_download_fallback_uses_keras_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CCE_OFFLINE")
    make_cifar10(tmp_path / "keras_cache")
    downloaded = str(tmp_path / "keras_cache" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(keras.utils, "get_file", lambda fname, origin, **kw: downloaded)
    assert data.load("cifar10", "test")[0].shape == (3, 32, 32, 3)


def test_missing_fashion_mnist_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("CCE_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    one_line_error(
        lambda: data.load("fashion_mnist"),
        "train-images-idx3-ubyte.gz",
        tmp_path / "nowhere",
        "apt-get install dataset-fashion-mnist",
    )


def test_truncated_gzip_and_wrong_idx_magic(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    make_fashion(folder)
    monkeypatch.setenv("CCE_FASHION_MNIST_DIR", str(folder))
    images = folder / "train-images-idx3-ubyte.gz"
    blob = images.read_bytes()
    images.write_bytes(blob[: len(blob) // 2])
    one_line_error(lambda: data.load("fashion_mnist", "train"), images)
    # A complete gzip whose IDX payload is cut short.
    with gzip.open(images, "wb") as f:
        f.write(idx_bytes(np.zeros((5, 28, 28)))[:-10])
    one_line_error(lambda: data.load("fashion_mnist", "train"), images, "bytes")
    # Labels file with an images magic number.
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels, "wb") as f:
        f.write(idx_bytes(np.zeros(3), magic=0x0803))
    one_line_error(lambda: data.load("fashion_mnist", "test"), labels, "magic")


def test_corrupt_and_truncated_cifar_archive(tmp_path):
    make_cifar10(tmp_path / "data")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) * 2 // 3])
    one_line_error(lambda: data.load("cifar10"), archive)
    archive.write_bytes(b"this is not a tar.gz at all" * 10)
    one_line_error(lambda: data.load("cifar10"), archive)
    # A valid archive with a member missing.
    train_only, _, _ = cifar_batch(4, 1, b"labels", 10)
    write_tar(archive, {"cifar-10-batches-py/data_batch_1": train_only})
    one_line_error(lambda: data.load("cifar10", "test"), archive, "test_batch")
    # Labels that do not match the images.
    short = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, 3]}, protocol=2)
    write_tar(archive, {"cifar-10-batches-py/test_batch": short})
    one_line_error(lambda: data.load("cifar10", "test"), archive, "labels")


class Gadget:
    """Unpickles by running its callable: the classic __reduce__ payload."""

    def __init__(self, func, *args):
        self.reduced = (func, args)

    def __reduce__(self):
        return self.reduced


GADGETS = {
    "os.system": lambda marker: Gadget(os.system, f"touch {shlex.quote(str(marker))}"),
    "builtins.open": lambda marker: Gadget(open, str(marker), "w"),
}


def make_tampered_cifar10(folder, marker, gadget="os.system"):
    """cifar-10-python.tar.gz in the official layout whose data_batch_1 runs `gadget` on load."""
    make_cifar10(folder)
    _, x, y = cifar_batch(4, 1, b"labels", 10)
    # The payload comes first, so a plain pickle.load would run it before reading any data.
    batch = {b"batch_label": GADGETS[gadget](marker), b"data": x.reshape(4, 3072), b"labels": [*y]}
    members = {"cifar-10-batches-py/data_batch_1": pickle.dumps(batch, protocol=2)}
    with tarfile.open(folder / "cifar-10-python.tar.gz", "r:gz") as tar:
        for ti in tar.getmembers():
            members.setdefault(ti.name, tar.extractfile(ti).read())
    write_tar(folder / "cifar-10-python.tar.gz", members)
    return folder / "cifar-10-python.tar.gz"


@pytest.mark.parametrize("gadget", sorted(GADGETS))
def test_pickle_payload_is_refused_before_it_runs(tmp_path, gadget):
    # The payload is live: a plain pickle.load runs it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(GADGETS[gadget](control), protocol=2))
    assert control.exists()
    marker = tmp_path / "MARKER"
    archive = make_tampered_cifar10(tmp_path / "data", marker, gadget)
    message = one_line_error(lambda: data.load("cifar10"), archive, "data_batch_1", "refusing")
    assert "corrupt" not in message  # the specific message, not the generic wrapper's
    assert ("posix.system" if gadget == "os.system" else "open") in message
    assert not marker.exists()


def test_cli_refuses_pickle_payload_with_exit_2(tmp_path):
    marker = tmp_path / "MARKER"
    archive = make_tampered_cifar10(tmp_path / "data", marker)  # CCE_DATA_DIR is tmp_path/data
    out = tmp_path / "run"
    flags = ("--dataset", "cifar10", "--epochs", "1", "--train_subset", "64")
    proc = train_cli(out, *flags, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    # The CLI's own lines (TF's C++ start-up log may reach stderr too): the error and nothing else,
    # not even the "not the official archive" warning.
    ours = [
        line
        for line in proc.stderr.splitlines()
        if line.startswith(("error:", "warning:", "Traceback"))
    ]
    assert len(ours) == 1 and ours[0].startswith("error:"), proc.stderr[-2000:]
    assert str(archive) in ours[0] and "data_batch_1" in ours[0] and "posix.system" in ours[0]
    assert not marker.exists() and not out.exists()


def test_repacked_archive_loads_with_one_warning(tmp_path, capsys):
    make_cifar10(tmp_path / "data")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    data.load("cifar10", "train")
    data.load("cifar10", "test")
    data._load_cached.cache_clear()
    assert data.load("cifar10", "test")[0].shape == (3, 32, 32, 3)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(archive) in lines[0] and "not the official cifar-10-python.tar.gz" in lines[0]


def test_official_digest_loads_silently(tmp_path, capsys, monkeypatch):
    make_cifar100(tmp_path / "data")
    sha = hashlib.sha256((tmp_path / "data" / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    official = dataclasses.replace(data._SOURCES["cifar100"], sha256=sha)
    monkeypatch.setitem(data._SOURCES, "cifar100", official)
    data.load("cifar100", "test")
    assert capsys.readouterr().err == ""
    assert data.source_digest("cifar100")["official"] is True


def test_source_digest(tmp_path, monkeypatch):
    make_cifar10(tmp_path / "data")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert data.source_digest("cifar10") == {"file": str(archive), "sha256": sha, "official": False}
    # A replaced file is hashed again, not served from the cache.
    make_cifar100(tmp_path / "other")
    os.replace(tmp_path / "other" / "cifar-100-python.tar.gz", archive)
    new_sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert new_sha != sha and data.source_digest("cifar10")["sha256"] == new_sha
    one_line_error(lambda: data.source_digest("mnist"), "mnist.npz", tmp_path / "data")
    # Folders: one digest per file read.
    folder = tmp_path / "fashion"
    make_fashion(folder)
    monkeypatch.setenv("CCE_FASHION_MNIST_DIR", str(folder))
    got = data.source_digest("fashion_mnist")
    assert (got["file"], got["sha256"], got["official"]) == (str(folder), None, None)
    digests = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in os.listdir(folder)}
    assert got["files"] == digests and len(digests) == 4
    make_cifar10(tmp_path / "keras", extracted=True)  # Keras' extracted folder: 6 batch files
    monkeypatch.setenv("CCE_DATA_DIR", str(tmp_path / "keras"))
    got = data.source_digest("cifar10")
    assert got["file"] == str(tmp_path / "keras" / "cifar-10-batches-py") and got["sha256"] is None
    assert sorted(got["files"]) == ["data_batch_1", "data_batch_2", "data_batch_3",
                                    "data_batch_4", "data_batch_5", "test_batch"]


def test_corrupt_mnist_npz(tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "mnist.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    one_line_error(lambda: data.load("mnist"), path)


# --------------------------------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------------------------------


def blob_images(n, column, size=28):
    """Black images with a 4x4 white square whose left edge is at `column`; label = index % 10."""
    x = np.zeros((n, size, size, 1), np.float32)
    x[:, 12:16, column : column + 4, :] = 1.0
    return x, (np.arange(n) % 10).astype(np.int64)


def centre_column(images):
    cols = np.arange(images.shape[2], dtype=np.float64)
    mass = images.sum(axis=(1, 3))  # [n, W]
    return (mass * cols).sum(axis=1) / mass.sum(axis=1)


def first(ds):
    return [t.numpy() for t in next(iter(ds))]


def test_train_dataset_shifts_keep_range_dtype_and_labels():
    x, y = blob_images(64, column=12)
    ds = data.train_dataset(x, y, batch_size=32, flip=False, shuffle=False, seed=3)
    batches = [[t.numpy() for t in b] for b in ds]
    assert len(batches) == 2
    xb = np.concatenate([b[0] for b in batches])
    yb = np.concatenate([b[1] for b in batches])
    assert xb.shape == x.shape and xb.dtype == np.float32 and yb.dtype == np.int64
    assert xb.min() >= 0.0 and xb.max() <= 1.0
    np.testing.assert_array_equal(yb, y)  # shuffle=False: labels stay with their images
    moved = np.abs(centre_column(xb) - centre_column(x))
    assert (moved > 0.5).mean() > 0.5  # most images move...
    assert moved.max() <= 0.1 * 28 + 0.5  # ...by at most 10% of the width
    assert moved.max() > 1.0


def test_flips_only_when_asked():
    x, y = blob_images(64, column=2)  # far left: a shift keeps the square there, a flip does not
    right = lambda ds: centre_column(np.concatenate([b[0].numpy() for b in ds])) > 14  # noqa: E731
    assert not right(data.train_dataset(x, y, 32, flip=False, seed=1)).any()
    assert right(data.train_dataset(x, y, 32, flip=True, seed=1)).any()
    # Without shifts each output is exactly the input or its mirror image, and both occur.
    rng = np.random.RandomState(0)
    x = rng.rand(64, 8, 8, 3).astype(np.float32)
    xb, yb = first(data.train_dataset(x, y, 64, flip=True, shift=0.0, shuffle=False, seed=2))
    same = np.all(xb == x, axis=(1, 2, 3))
    mirrored = np.all(xb == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()
    np.testing.assert_array_equal(yb, y)


def test_seeded_determinism_and_fresh_epochs():
    rng = np.random.RandomState(0)
    x = rng.rand(40, 8, 8, 3).astype(np.float32)
    y = np.arange(40) % 10
    make = lambda seed: data.train_dataset(x, y, 8, flip=True, seed=seed)  # noqa: E731
    a, b, c = first(make(7)), first(make(7)), first(make(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    ds = make(7)
    epoch1, epoch2 = first(ds), first(ds)
    assert not np.array_equal(epoch1[0], epoch2[0])  # new order and new shifts every epoch


def test_every_batch_and_epoch_draws_new_shifts():
    x, y = blob_images(16, column=12)  # identical images: only the shifts tell batches apart
    ds = data.train_dataset(x, y, 4, shuffle=False, seed=5)
    epoch1 = [b[0].numpy() for b in ds]
    epoch2 = [b[0].numpy() for b in ds]
    assert len({b.tobytes() for b in epoch1}) == 4
    assert not any(np.array_equal(a, b) for a, b in zip(epoch1, epoch2))


def test_batching_remainder_and_eval_dataset():
    rng = np.random.RandomState(0)
    x = rng.rand(10, 8, 8, 1).astype(np.float32)
    y = np.arange(10)
    assert [int(b[0].shape[0]) for b in data.train_dataset(x, y, 4)] == [4, 4]
    sizes = [int(b[0].shape[0]) for b in data.train_dataset(x, y, 4, drop_remainder=False)]
    assert sizes == [4, 4, 2]
    plain = data.train_dataset(x, y, 10, augment=False, shuffle=False)
    np.testing.assert_array_equal(first(plain)[0], x)
    batches = [[t.numpy() for t in b] for b in data.eval_dataset(x, y, 4)]
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    assert batches[0][1].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
