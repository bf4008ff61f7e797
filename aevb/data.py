"""The published data files, checked against their checksums and read in place.

Loaders only read: nothing is unpacked or cached in the data folder, so any number of runs can load
at once and the folder may be read-only. `make data` (scripts/fetch_data.py) is the one step that
writes there.
"""
import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from aevb import paths
from aevb.declared import FREY_N_TEST, dataset  # each dataset declared once

# Every file the project reads, relative to the data folder, with its SHA256. For Larochelle's
# binarized MNIST the hash is of the uncompressed .amat text, so a copy compressed by any gzip
# verifies (these equal the checksums TensorFlow Datasets publishes for his files).
DATA_FILES = {
    "MNIST/raw/train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "MNIST/raw/train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "MNIST/raw/t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "frey/frey_rawface.mat": "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
    "binarized_mnist/binarized_mnist_train.amat.gz":
        "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "binarized_mnist/binarized_mnist_valid.amat.gz":
        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "binarized_mnist/binarized_mnist_test.amat.gz":
        "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
GET_DATA_HINT = (
    "Run `make data` (it copies from $VAE_DATA_SOURCE when set, otherwise downloads), "
    "or set VAE_DATA_DIR to a folder that already holds the files (layout in docs/data.md).")
# A grey level g in 0..255 becomes g / pixel_scale. 255 maps onto [0, 1] (torchvision's ToTensor,
# the replication report, Burda et al.'s loaders); Kingma & Welling's data had 256 (anglepy's
# data/freyface.py divides by 256, and its data/mnist.py reads mnist.pkl.gz, which stores g / 256):
# their pixels lie in [0, 255/256], so a white pixel is 255/256, never 1.
PIXEL_SCALES = (255, 256)


class DataError(RuntimeError):
    """A data file is missing, unreadable or corrupt; the message says how to get a good copy."""


def file_sha256(path, name=None):
    """SHA256 of the data file `name` (default: path's name), of its decompressed content for
    `.amat.gz`."""
    digest = hashlib.sha256()
    opener = gzip.open if str(name or path).endswith(".amat.gz") else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=None)
def _verified(path, mtime_ns, size):  # keyed on mtime and size: a replaced file is checked again
    return file_sha256(path)


def data_file(data_dir, name):
    """Path of a data file after checking it exists and has the published checksum."""
    path = Path(data_dir or paths.data_dir()) / name
    if not path.is_file():
        raise DataError(f"Missing data file {path}. {GET_DATA_HINT}")
    try:
        stat = path.stat()
        digest = _verified(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(
            f"Cannot read data file {path} ({e}). Delete it and run `make data`.") from e
    if digest != DATA_FILES[name]:
        raise DataError(
            f"Data file {path} is corrupt or truncated (sha256 {digest[:12]}..., expected "
            f"{DATA_FILES[name][:12]}...). Delete it and run `make data` for a good copy.")
    return path


def read_idx(path):
    """An IDX file (LeCun's MNIST format), gzipped, as a numpy array: a 4-byte header (two zero
    bytes, the type code, the number of dimensions), each dimension as a big-endian uint32, then
    the values in row-major order. MNIST's are unsigned bytes (type code 0x08)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@lru_cache(maxsize=None)
def _mnist_tensors(data_dir, train):
    """MNIST, once per process: uint8 images [N, 784] and labels [N]."""
    prefix = "train" if train else "t10k"
    images = read_idx(data_file(data_dir, f"MNIST/raw/{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(data_file(data_dir, f"MNIST/raw/{prefix}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images.reshape(len(images),
                                           784).copy()), torch.from_numpy(labels.astype(np.int64))


def check_pixel_scale(pixel_scale):
    if pixel_scale not in PIXEL_SCALES or isinstance(pixel_scale, bool):
        raise ValueError(
            f"pixel_scale={pixel_scale!r}: expected one of {list(PIXEL_SCALES)} (grey level / "
            "scale)"
        )


def load_mnist(data_dir=None, split="train", binarize="none", pixel_scale=255):
    """MNIST as one float tensor [N, 784] in [0, 1] plus labels [N] (None for `static`).

    binarize: "none"    grey levels / pixel_scale (255: the replication report's; 256: Kingma's);
              "dynamic" grey levels for split="train" (train with `dynamic_binarization=True` for a
                        fresh Bernoulli draw of every image each epoch); other splits are binarized
                        once with a fixed seed so that evaluation is repeatable;
              "static"  Larochelle's fixed binarization, splits train (50k) / valid (10k) /
                        test (10k).
    """
    data_dir = str(Path(data_dir or paths.data_dir()))
    check_pixel_scale(pixel_scale)
    if binarize == "static":
        if pixel_scale != 255:
            raise ValueError(
                "pixel_scale applies to grey levels; Larochelle's static binarization has none "
                "(use pixel_scale=255)")
        if split not in ("train", "valid", "test"):
            raise ValueError(
                f"split={split!r}: static binarized MNIST has 'train', 'valid', 'test'")
        path = data_file(data_dir, f"binarized_mnist/binarized_mnist_{split}.amat.gz")
        with gzip.open(path, "rb") as f:
            text = np.frombuffer(f.read(), dtype=np.uint8)
        rows = text.reshape(-1, 784 * 2)  # each line: 784 digits, each followed by ' ' or '\n'
        return torch.from_numpy(rows[:, ::2] - ord("0")).float(), None
    if binarize not in ("none", "dynamic"):
        raise ValueError(f"binarize={binarize!r}: expected 'none', 'dynamic' or 'static'")
    if split not in ("train", "test"):
        raise ValueError(
            f"split={split!r}: MNIST has 'train' and 'test' (a 'valid' split exists for "
            "binarize='static')")
    images, labels = _mnist_tensors(data_dir, split == "train")
    x = images.float() / pixel_scale
    if binarize == "dynamic" and split != "train":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    return x, labels.clone()


def load_frey(data_dir=None, split="all", pixel_scale=255):
    """Frey Face: [1965, 560] in [0, 1] (20x28 images, row-major 28 rows of 20 pixels), grey levels
    / pixel_scale.

    split="train" / "test": a fixed random permutation (numpy default_rng(0)); its last
    FREY_N_TEST = 200 frames are the test set, the other 1765 the training set.
    """
    from scipy.io import loadmat
    check_pixel_scale(pixel_scale)
    path = data_file(data_dir, "frey/frey_rawface.mat")
    x = torch.from_numpy(loadmat(path)["ff"].T.copy()).float() / pixel_scale
    if split == "all":
        return x
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))
    if split == "train":
        return x[order[:-FREY_N_TEST]]
    if split == "test":
        return x[order[-FREY_N_TEST:]]
    raise ValueError(f"split={split!r}: expected 'all', 'train' or 'test'")


def load(name, split, binarize="none", data_dir=None, pixel_scale=255):
    """(x, labels or None) of a dataset's split: what a run trains or is evaluated on."""
    if binarize not in dataset(name).binarize:
        raise ValueError(f"binarize={binarize!r}: {dataset(name).title} has "
                         + ("grey levels only ('none')" if dataset(name).binarize == ("none",)
                            else f"{list(dataset(name).binarize)}"))
    if name == "mnist":
        return load_mnist(data_dir, split, binarize, pixel_scale)
    return load_frey(data_dir, split, pixel_scale), None
