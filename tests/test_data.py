"""Loaders: shapes, ranges, splits, what a user sees when a file is missing or corrupt, and that any
number of processes can load at once from a folder they never write to."""
import os
import shutil
import subprocess

import pytest
import torch

from aevb import data
from aevb.data import DataError, data_file, load_frey, load_mnist
from conftest import PY, ROOT


def test_mnist_continuous():
    x, y = load_mnist(None, "train")
    xt, yt = load_mnist(None, "test")
    assert x.shape == (60_000, 784) and xt.shape == (10_000, 784) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1 and 0.1 < x.mean() < 0.2
    assert len(torch.unique(x[:2000])) > 200  # grey levels, not binarized
    assert y.shape == (60_000,) and y.dtype == torch.int64 and set(yt.tolist()) == set(range(10))
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the published first training labels


def test_idx_reader_gives_what_torchvision_reads(tmp_path):
    from torchvision.datasets import MNIST
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    for name in data.DATA_FILES:
        if name.startswith("MNIST/"):  # torchvision wants all four before it unpacks one
            shutil.copyfile(data_file(None, name), tmp_path / name)
    reference = MNIST(str(tmp_path), train=False, download=True)  # unpacks in tmp_path, fetches nothing
    x, y = load_mnist(None, "test")
    assert torch.equal((x * 255).round().to(torch.uint8), reference.data.reshape(-1, 784))
    assert torch.equal(y, reference.targets)


def test_mnist_dynamic_binarization():
    x, _ = load_mnist(None, "train", binarize="dynamic")
    xt1, _ = load_mnist(None, "test", binarize="dynamic")
    xt2, _ = load_mnist(None, "test", binarize="dynamic")
    assert len(torch.unique(x[:2000])) > 200  # the training loop draws the bits each epoch
    assert set(torch.unique(xt1).tolist()) == {0.0, 1.0} and torch.equal(xt1, xt2)


def test_mnist_static_binarization():
    sizes = {"train": 50_000, "valid": 10_000, "test": 10_000}
    for split, n in sizes.items():
        x, labels = load_mnist(None, split, binarize="static")
        assert x.shape == (n, 784) and labels is None
        assert set(torch.unique(x).tolist()) == {0.0, 1.0} and 0.1 < x.mean() < 0.2


def test_frey_face_and_its_split():
    x = load_frey(None)
    assert x.shape == (1965, 560) and 0 <= x.min() and x.max() <= 1
    train, test = load_frey(None, "train"), load_frey(None, "test")
    assert train.shape == (1765, 560) and test.shape == (200, 560)
    rows = lambda t: sorted(tuple(r) for r in (t * 255).round().int().tolist())
    assert sorted(rows(train) + rows(test)) == rows(x)  # a partition of the frames: none lost or repeated
    assert torch.equal(test, load_frey(None, "test"))  # fixed, not redrawn
    assert rows(test) != rows(x[-200:]) and rows(test) != rows(x[:200])  # a random 200, not the video's end
    assert torch.equal(data.load("frey", "test")[0], test)


def test_bad_split_or_binarization_is_refused():
    with pytest.raises(ValueError, match="split"):
        load_mnist(None, "valid")
    with pytest.raises(ValueError, match="binarize"):
        load_mnist(None, "train", binarize="otsu")
    with pytest.raises(ValueError, match="Frey Face has grey levels only"):
        data.load("frey", "train", binarize="dynamic")


def test_missing_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"frey_rawface\.mat.*make data"):
        load_frey(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*make data"):
        load_mnist(tmp_path, "train")
    not_a_folder = tmp_path / "data"  # a data folder that cannot be read: the same message
    not_a_folder.write_text("oops")
    with pytest.raises(DataError, match=r"data/MNIST/raw/train-images-idx3-ubyte\.gz.*make data"):
        load_mnist(not_a_folder, "train")


def test_corrupt_file_is_refused(tmp_path):
    good = data_file(None, "frey/frey_rawface.mat")
    (tmp_path / "frey").mkdir()
    bad = tmp_path / "frey" / "frey_rawface.mat"
    shutil.copyfile(good, bad)
    with open(bad, "r+b") as f:
        f.truncate(good.stat().st_size // 2)
    with pytest.raises(DataError, match=r"frey_rawface\.mat is corrupt or truncated.*make data"):
        load_frey(tmp_path)


LOAD_EVERYTHING = """
import sys
from aevb import data
x, y = data.load_mnist(sys.argv[1], "train")
xt, _ = data.load_mnist(sys.argv[1], "test", binarize="dynamic")
print(len(x), float(x.sum()), int(y.sum()), float(xt.sum()))
"""


def snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_many_processes_load_at_once_from_a_fresh_read_only_folder(tmp_path):
    """The race a parallel `make paper` once hit (each run unpacking MNIST into the data folder at
    the same moment) cannot happen: loaders read the .gz files in place and write nothing."""
    fresh = tmp_path / "data"
    (fresh / "MNIST" / "raw").mkdir(parents=True)
    for name in data.DATA_FILES:
        if name.startswith("MNIST/"):
            shutil.copyfile(data_file(None, name), fresh / name)
    before = snapshot(fresh)
    for path in [fresh, *fresh.rglob("*")]:  # read-only (root ignores this; the snapshot below does not)
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        processes = [subprocess.Popen([PY, "-c", LOAD_EVERYTHING, str(fresh)], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(3)]
        results = [p.communicate(timeout=300) for p in processes]
    finally:
        for path in [fresh, *fresh.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in results]
    outputs = {out for out, _ in results}
    assert len(outputs) == 1 and outputs.pop().split()[0] == "60000"  # every process read the same data
    assert snapshot(fresh) == before  # nothing written, unpacked or touched in the data folder


def test_make_data_refuses_a_corrupt_source_and_leaves_nothing_behind(tmp_path):
    source, target = tmp_path / "source", tmp_path / "data"
    shutil.copytree(data_file(None, "frey/frey_rawface.mat").parent.parent, source)
    frey = source / "frey" / "frey_rawface.mat"
    frey.write_bytes(frey.read_bytes()[:1000])  # truncated
    env = {**os.environ, "VAE_DATA_SOURCE": str(source), "VAE_DATA_DIR": str(target)}
    result = subprocess.run([PY, str(ROOT / "scripts" / "fetch_data.py")], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "frey/frey_rawface.mat" in result.stderr and "checksum" in result.stderr
    assert not (target / "frey" / "frey_rawface.mat").exists()
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")]
    assert (target / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()  # the good files before it
