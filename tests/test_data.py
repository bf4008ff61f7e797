"""Loaders: shapes, ranges, splits, and what a user sees when a file is missing or corrupt."""
import shutil

import pytest
import torch

import vae_core as vc


def test_mnist_continuous():
    x, y = vc.load_mnist(None, "train")
    xt, yt = vc.load_mnist(None, "test")
    assert x.shape == (60_000, 784) and xt.shape == (10_000, 784) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1 and 0.1 < x.mean() < 0.2
    assert len(torch.unique(x)) > 200  # grey levels, not binarized
    assert y.shape == (60_000,) and set(yt.tolist()) == set(range(10))
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the published first training labels


def test_mnist_dynamic_binarization():
    x, _ = vc.load_mnist(None, "train", binarize="dynamic")
    xt1, _ = vc.load_mnist(None, "test", binarize="dynamic")
    xt2, _ = vc.load_mnist(None, "test", binarize="dynamic")
    assert len(torch.unique(x)) > 200  # the training loop draws the bits each epoch
    assert set(torch.unique(xt1).tolist()) == {0.0, 1.0} and torch.equal(xt1, xt2)


def test_mnist_static_binarization():
    sizes = {"train": 50_000, "valid": 10_000, "test": 10_000}
    for split, n in sizes.items():
        x, labels = vc.load_mnist(None, split, binarize="static")
        assert x.shape == (n, 784) and labels is None
        assert set(torch.unique(x).tolist()) == {0.0, 1.0} and 0.1 < x.mean() < 0.2


def test_frey_face_and_its_split():
    x = vc.load_frey(None)
    assert x.shape == (1965, 560) and 0 <= x.min() and x.max() <= 1
    train, test = vc.load_frey(None, "train"), vc.load_frey(None, "test")
    assert train.shape == (1765, 560) and test.shape == (200, 560)
    rows = lambda t: sorted(tuple(r) for r in (t * 255).round().int().tolist())
    assert sorted(rows(train) + rows(test)) == rows(x)  # a partition of the frames: none lost or repeated
    assert torch.equal(test, vc.load_frey(None, "test"))  # fixed, not redrawn


def test_bad_split_or_binarization_is_refused():
    with pytest.raises(ValueError, match="split"):
        vc.load_mnist(None, "valid")
    with pytest.raises(ValueError, match="binarize"):
        vc.load_mnist(None, "train", binarize="otsu")


def test_missing_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(vc.DataError, match=r"frey_rawface\.mat.*make data"):
        vc.load_frey(tmp_path)
    with pytest.raises(vc.DataError, match=r"train-images-idx3-ubyte\.gz.*make data"):
        vc.load_mnist(tmp_path, "train")


def test_corrupt_file_is_refused(tmp_path):
    good = vc.data_file(None, "frey/frey_rawface.mat")
    (tmp_path / "frey").mkdir()
    bad = tmp_path / "frey" / "frey_rawface.mat"
    shutil.copyfile(good, bad)
    with open(bad, "r+b") as f:
        f.truncate(good.stat().st_size // 2)
    with pytest.raises(vc.DataError, match=r"frey_rawface\.mat is corrupt or truncated.*make data"):
        vc.load_frey(tmp_path)
