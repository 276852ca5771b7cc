"""grader.data: digits splits, MNIST from IDX files (real and synthetic), and the errors for bad input."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.data import DataError, Dataset, clear_cache, load_dataset, read_idx

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared/data/mnist"


def _idx(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, n: int = 20, prefix: str = "t10k", gz: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, size=(n, 28, 28))
    labels = np.arange(n) % 10
    for kind, arr, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
        data = _idx(arr, magic)
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


# ---- digits ------------------------------------------------------------------------------------

def test_digits_splits_sizes_types_and_values():
    d = load_dataset("digits")
    assert isinstance(d, Dataset)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (1000, 350, 447)
    assert (d.num_vals, d.D, d.image_shape, d.likelihood, d.name) == (17, 64, (8, 8), "categorical", "digits")
    for x, y in (d.split("train"), d.split("val"), d.split("test")):
        assert x.dtype == torch.float32 and x.shape[1] == 64
        assert y.dtype == torch.int64 and len(y) == len(x)
        assert float(x.min()) >= 0 and float(x.max()) <= 16
        assert torch.equal(x, x.round())
        assert set(y.tolist()) <= set(range(10))
    assert float(d.x_train.max()) == 16
    assert set(d.y_train.tolist()) == set(range(10))


def test_digits_split_is_a_fixed_permutation_and_reproducible():
    from sklearn.datasets import load_digits

    d1 = load_dataset("digits")
    assert load_dataset("digits") is d1  # memoised
    clear_cache()
    d2 = load_dataset("digits")
    assert d2 is not d1
    for a, b in zip((d1.x_train, d1.x_val, d1.x_test, d1.y_test), (d2.x_train, d2.x_val, d2.x_test, d2.y_test)):
        assert torch.equal(a, b)
    bunch = load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(d1.x_train.numpy(), bunch.data[perm[:1000]].astype(np.float32))
    np.testing.assert_array_equal(d1.y_test.numpy(), bunch.target[perm[1350:]])
    # the splits are disjoint and together hold every image once
    allx = torch.cat([d1.x_train, d1.x_val, d1.x_test]).numpy()
    np.testing.assert_array_equal(allx[np.argsort(perm)], bunch.data.astype(np.float32))


def test_bad_specs():
    with pytest.raises(DataError, match="unknown data set spec"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="no path"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="only supported for MNIST"):
        load_dataset("digits", binarize=True)
    assert issubclass(DataError, ValueError)


# ---- MNIST -------------------------------------------------------------------------------------

@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no MNIST test set at {SHARED_MNIST}")
def test_shared_mnist_t10k_only_is_split_and_says_so():
    d = load_dataset(f"mnist:{SHARED_MNIST}")
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (7000, 1000, 2000)
    assert (d.num_vals, d.D, d.image_shape, d.likelihood) == (256, 784, (28, 28), "categorical")
    assert "only the t10k set" in d.note and "7000/1000/2000" in d.note
    assert d.x_train.dtype == torch.float32 and float(d.x_train.max()) == 255 and float(d.x_train.min()) == 0
    counts = np.bincount(torch.cat([d.y_train, d.y_val, d.y_test]).numpy(), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # README's label counts
    b = load_dataset(f"mnist-binary:{SHARED_MNIST}")
    assert (b.num_vals, b.likelihood) == (2, "bernoulli") and "binarized" in b.note
    assert set(torch.unique(b.x_train).tolist()) == {0.0, 1.0}
    assert torch.equal(b.x_train, (d.x_train > 127.5).float())  # same split, threshold 0.5 after /255
    assert load_dataset("mnist", root=SHARED_MNIST, binarize=True).x_test.shape == b.x_test.shape


def test_synthetic_idx_files_plain_gz_and_torchvision_layout(tmp_path):
    flat = _write_mnist(tmp_path / "flat", n=30, gz=False)
    d = load_dataset(f"mnist:{flat}")
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (21, 3, 6)
    raw = read_idx(flat / "t10k-images-idx3-ubyte", 2051)
    assert raw.shape == (30, 28, 28)
    allx = torch.cat([d.x_train, d.x_val, d.x_test]).numpy()
    assert sorted(map(bytes, allx.astype(np.uint8))) == sorted(map(bytes, raw.reshape(30, -1)))
    tv = _write_mnist(tmp_path / "tv" / "MNIST" / "raw", n=30)
    assert torch.equal(load_dataset("mnist:tv", root=tmp_path).x_test, d.x_test)  # relative to root, gzip


def test_both_official_sets_train_val_from_train_and_test_from_t10k(tmp_path):
    folder = _write_mnist(tmp_path / "m", n=60, prefix="train", seed=1)
    _write_mnist(folder, n=12, prefix="t10k", seed=2)
    d = load_dataset(f"mnist:{folder}")
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (50, 10, 12)
    assert "official t10k set as test" in d.note


@pytest.mark.parametrize("damage", ["truncate", "bad_magic", "swapped", "bad_gzip", "extra_bytes"])
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path, damage):
    folder = _write_mnist(tmp_path / damage, n=10, gz=damage == "bad_gzip")
    name = "t10k-images-idx3-ubyte" + (".gz" if damage == "bad_gzip" else "")
    path = folder / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-100])
    elif damage == "bad_magic":
        path.write_bytes(b"\x12\x34" + data[2:])
    elif damage == "swapped":
        path.write_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes())
    elif damage == "bad_gzip":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data + b"\0")
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{folder}")
    assert str(path) in str(e.value)


def test_missing_folder_and_missing_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{missing}")
    msg = str(e.value)
    assert str(missing) in msg and "t10k-images-idx3-ubyte" in msg and "does not exist" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no MNIST files") as e:
        load_dataset(f"mnist:{empty}")
    assert str(empty) in str(e.value) and "train-labels-idx1-ubyte" in str(e.value)
    half = _write_mnist(tmp_path / "half", n=10)
    (half / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="pairs") as e:
        load_dataset(f"mnist:{half}")
    assert str(half) in str(e.value) and "t10k-labels-idx1-ubyte" in str(e.value)
