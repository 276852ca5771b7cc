"""Data sets for model-level grading: scikit-learn's digits (embedded, the default) or a local MNIST.

    load_dataset("digits")                      # 1,797 8×8 images, values 0..16 (num_vals=17)
    load_dataset("mnist:/path/to/mnist")        # raw 0..255 (num_vals=256, categorical)
    load_dataset("mnist:/path", binarize=True)  # pixel/255 > 0.5 -> {0, 1} (num_vals=2, bernoulli)
    load_dataset("mnist-binary:/path")          # the same, for callers that only pass a spec string

Nothing is ever downloaded. MNIST is read from the original IDX files (optionally gzip-compressed)
in PATH itself, in a torchvision root (PATH/MNIST/raw/) or in PATH/raw/. When only one of the two
official sets is there (e.g. only the 10,000 t10k images), it is split train/val/test reproducibly
and `Dataset.note` says so.

Results are memoised per process and keyed by the resolved path, the option and the files' sizes
and modification times; the tensors are shared between callers, so do not modify them in place.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DataError", "Dataset", "load_dataset", "read_idx", "clear_cache"]

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N)

DIGITS_SPLIT = (1000, 350)  # train, val; the rest (447) is test
DIGITS_SEED = 0
MNIST_SEED = 0
MNIST_VAL_FROM_TRAIN = 10_000  # when both official sets exist: 50,000 train / 10,000 val / t10k test
SINGLE_SET_FRACTIONS = (0.7, 0.1)  # when one official set exists: 70 % train, 10 % val, 20 % test

# Accepted file names per (set, kind); each may also end in ".gz".
_NAMES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("t10k", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("t10k", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_ACCEPTED = ", ".join(f"{n}[.gz]" for names in _NAMES.values() for n in names[:1])


class DataError(ValueError):
    """A data set could not be loaded: the message names the path, what was expected and what to do."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Splits as float32 tensors N×D holding integer pixel values, int64 labels, and metadata."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_vals: int
    D: int
    image_shape: tuple[int, int]
    likelihood: str  # 'categorical' or 'bernoulli'
    name: str
    note: str = ""

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of 'train', 'val' or 'test'."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def describe(self) -> str:
        """The data in a student's words (the report's "Data set" line); `summary` is the exact record."""
        from grader.glossary import LIKELIHOODS

        size = "×".join(str(s) for s in self.image_shape)
        levels = "binary pixels" if self.num_vals == 2 else f"{self.num_vals} grey levels"
        return (f"{self.name}: {len(self.x_train):,} training, {len(self.x_val):,} validation and {len(self.x_test):,} "
                f"test images of {size} pixels, {levels} ({LIKELIHOODS.get(self.likelihood, self.likelihood)})")

    def summary(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} test, "
                f"D={self.D} {self.image_shape}, {self.likelihood} with num_vals={self.num_vals}"
                + (f" ({self.note})" if self.note else ""))


_CACHE: dict[tuple, Dataset] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def load_dataset(spec: str = "digits", root: str | os.PathLike | None = None, *, binarize: bool | None = None) -> Dataset:
    """Load a data set by spec: 'digits', 'mnist:PATH', 'mnist-binary:PATH', or 'mnist' with `root`=PATH.

    A relative PATH is resolved against `root` (default: the current directory). `binarize` applies to
    MNIST only (the 'mnist-binary:' prefix sets it); digits are always categorical with 17 values.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data set spec must be a non-empty string like 'digits' or 'mnist:PATH', got {spec!r}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "digits":
        if rest.strip():
            raise DataError(f"data set spec {spec!r}: 'digits' takes no path (it is embedded in scikit-learn)")
        if binarize:
            raise DataError("binarize is only supported for MNIST; digits are categorical with values 0..16")
        key = ("digits",)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = _load_digits()
            return _CACHE[key]
    if kind in ("mnist", "mnist-binary", "mnist-bin"):
        if kind != "mnist":
            if binarize is False:
                raise DataError(f"data set spec {spec!r} asks for binarized MNIST but binarize=False was given")
            binarize = True
        path_text = rest.strip() if sep else ""
        if not path_text:
            if root is None:
                raise DataError(f"data set spec {spec!r} has no path: write 'mnist:PATH' (a folder holding the MNIST "
                                f"IDX files {_ACCEPTED}) or pass root=PATH")
            path = Path(root)
        else:
            path = Path(os.path.expanduser(path_text))
            if not path.is_absolute() and root is not None:
                path = Path(root) / path
        path = path.resolve()
        files = _find_mnist_files(path)
        key = ("mnist", str(path), bool(binarize),
               tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files.values())))
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = _load_mnist(path, files, bool(binarize))
            return _CACHE[key]
    raise DataError(f"unknown data set spec {spec!r}: use 'digits' (default, embedded), 'mnist:PATH' "
                    f"(raw 0..255) or 'mnist-binary:PATH' (binarized)")


# ---- digits -------------------------------------------------------------------------------------

def digits_file() -> Path:
    """scikit-learn's embedded digits (`load_digits` reads this file), found without importing scikit-learn."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the 'digits' data set needs scikit-learn (pip install scikit-learn)")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(data 1797×64, target) exactly as `sklearn.datasets.load_digits()` gives them, read the way it reads them
    (np.loadtxt of the gzipped CSV, target the last column) without importing scikit-learn and SciPy (2-6 s on
    a 2-core machine, paid by every `grade run` of a model-level assignment). Other layouts: load_digits."""
    path = digits_file()
    if not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False)


def _load_digits() -> Dataset:
    data, target = _digits_arrays()
    x = np.asarray(data, dtype=np.float32)  # 1797×64, integer values 0..16
    y = np.asarray(target, dtype=np.int64)
    perm = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    n_train, n_val = DIGITS_SPLIT
    parts = _split(x, y, perm, n_train, n_val)
    return Dataset(*parts, num_vals=17, D=64, image_shape=(8, 8), likelihood="categorical", name="digits",
                   note=f"scikit-learn load_digits; split {n_train}/{n_val}/{len(x) - n_train - n_val} "
                        f"after a permutation with seed {DIGITS_SEED}")


def _split(x: np.ndarray, y: np.ndarray, perm: np.ndarray, n_train: int, n_val: int):
    idx = (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])
    out = []
    for i in idx:
        out += [torch.from_numpy(np.ascontiguousarray(x[i])), torch.from_numpy(np.ascontiguousarray(y[i]))]
    return out


# ---- MNIST --------------------------------------------------------------------------------------

def _find_mnist_files(path: Path) -> dict[tuple[str, str], Path]:
    """The IDX files found in the first candidate folder that holds any; DataError if none or unpaired."""
    todo = ("Point the spec at a folder with the IDX files (the t10k pair alone is enough), e.g. "
            "'mnist:/work/shared/data/mnist'; nothing is downloaded.")
    if not path.exists():
        raise DataError(f"MNIST folder {path} does not exist. Expected a folder holding {_ACCEPTED} "
                        f"(or a torchvision root with MNIST/raw/). {todo}")
    if not path.is_dir():
        raise DataError(f"MNIST path {path} is not a folder. Expected a folder holding {_ACCEPTED}. {todo}")
    for folder in (path, path / "MNIST" / "raw", path / "raw"):
        if not folder.is_dir():
            continue
        found = {}
        for key, names in _NAMES.items():
            for name in names:
                for candidate in (folder / name, folder / f"{name}.gz"):
                    if candidate.is_file() and key not in found:
                        found[key] = candidate
        if found:
            for which in ("train", "t10k"):
                has = [(which, k) in found for k in ("images", "labels")]
                if any(has) and not all(has):
                    present = found.get((which, "images")) or found.get((which, "labels"))
                    missing = _NAMES[(which, "labels" if has[0] else "images")][0]
                    raise DataError(f"MNIST folder {folder} has {present.name} but not {missing}[.gz]: images and "
                                    f"labels come in pairs. Expected {_ACCEPTED}. Add the missing file or remove "
                                    f"the unpaired one.")
            return found
    raise DataError(f"no MNIST files in {path} (also looked in {path / 'MNIST' / 'raw'} and {path / 'raw'}). "
                    f"Expected {_ACCEPTED} (plain or gzip-compressed). {todo}")


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or .gz) of unsigned bytes into a uint8 array; DataError if invalid."""
    path = Path(path)
    what = {IMAGES_MAGIC: "an IDX image file (magic 2051, N×rows×cols unsigned bytes)",
            LABELS_MAGIC: "an IDX label file (magic 2049, N unsigned bytes)"}.get(expect_magic, "an IDX file")
    fix = "The file looks truncated or corrupt: replace it with a fresh copy of the original MNIST file."
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} as {what}: {type(e).__name__}: {e}. {fix}") from e
    if len(raw) < 4:
        raise DataError(f"{path} is {len(raw)} bytes long, too short for {what}. {fix}")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} has magic number {magic} (bytes {raw[:4].hex()}), not {what}. {fix}")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{path} has magic number {magic}, expected {expect_magic}: it is not {what}. "
                        f"Check that the images and labels files are not swapped.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: header claims {ndim} dimensions but the file has {len(raw)} bytes. {fix}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != n:
        raise DataError(f"{path}: header says {'×'.join(map(str, dims))} = {n} bytes of data but the file holds "
                        f"{len(raw) - header}. {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected N×28×28 MNIST images, got shape {images.shape}. "
                        f"Use the original MNIST files.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path} holds {labels.shape} labels but {images_path} holds {len(images)} images: "
                        f"they must match. Use the labels file that belongs to these images.")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must be digits 0..9, found {int(labels.max())}. {labels_path.name} "
                        f"looks corrupt: replace it with the original file.")
    return images.reshape(len(images), -1), labels.astype(np.int64)


def _load_mnist(path: Path, files: dict, binarize: bool) -> Dataset:
    sets = {which: _read_pair(files[(which, "images")], files[(which, "labels")])
            for which in ("train", "t10k") if (which, "images") in files}

    def convert(a: np.ndarray) -> np.ndarray:
        if binarize:
            return (a.astype(np.float32) / 255.0 > 0.5).astype(np.float32)
        return a.astype(np.float32)

    rng = np.random.default_rng(MNIST_SEED)
    folder = files[next(iter(files))].parent
    if "train" in sets and "t10k" in sets:
        x, y = sets["train"]
        perm = rng.permutation(len(x))
        n_val = min(MNIST_VAL_FROM_TRAIN, len(x) // 6)
        tr, va = perm[: len(x) - n_val], perm[len(x) - n_val:]
        xt, yt = sets["t10k"]
        parts = [torch.from_numpy(convert(x[tr])), torch.from_numpy(y[tr]),
                 torch.from_numpy(convert(x[va])), torch.from_numpy(y[va]),
                 torch.from_numpy(convert(xt)), torch.from_numpy(yt.copy())]
        note = (f"MNIST from {folder}: official training set split {len(tr)}/{n_val} train/val "
                f"(seed {MNIST_SEED}), official t10k set as test")
    else:
        which = next(iter(sets))
        x, y = sets[which]
        n_train = int(round(SINGLE_SET_FRACTIONS[0] * len(x)))
        n_val = int(round(SINGLE_SET_FRACTIONS[1] * len(x)))
        perm = rng.permutation(len(x))
        parts = _split(convert(x), y, perm, n_train, n_val)
        other = "training" if which == "t10k" else "t10k (test)"
        note = (f"MNIST from {folder}: only the {which} set is present ({len(x)} images; the {other} files are "
                f"missing), split {n_train}/{n_val}/{len(x) - n_train - n_val} train/val/test with seed {MNIST_SEED}")
    if binarize:
        note += "; binarized (pixel/255 > 0.5)"
    return Dataset(*parts, num_vals=2 if binarize else 256, D=784, image_shape=(28, 28),
                   likelihood="bernoulli" if binarize else "categorical",
                   name="mnist-binary" if binarize else "mnist", note=note)
