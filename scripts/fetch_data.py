"""Put every data file into the project's data folder and verify its checksum (`make data`).

From a local copy when VAE_DATA_SOURCE names one (same layout, e.g. ../shared/data), otherwise
by download: MNIST's four .gz files from torchvision's mirrors, Frey Face and Larochelle's binarized
MNIST from their authors' pages. Files already present and correct are left alone; nothing
half-written is left behind (each file is written to a temporary name, verified, then renamed).
Only the published files are stored: the loaders read them as they are, unpacking nothing.
"""
import gzip
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from aevb import paths
from aevb.data import DATA_FILES, DataError, data_file, file_sha256
from aevb.files import atomic_write

LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets"
URLS = {
    "frey/frey_rawface.mat": "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
    **{
        f"binarized_mnist/binarized_mnist_{s}.amat.gz":
            f"{LAROCHELLE}/binarized_mnist/binarized_mnist_{s}.amat"
        for s in ("train", "valid", "test")
    },
}


def is_good(path, name):
    try:
        return path.is_file() and file_sha256(path, name) == DATA_FILES[name]
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def place(name, data_dir, fill):
    """Write data_dir/name from `fill(tmp_path)`, keeping it only if its checksum is right."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir) / Path(name).name
        fill(tmp)
        if not is_good(tmp, name):
            raise DataError(f"{name}: the copy obtained does not have the published checksum")
        with open(tmp, "rb") as src:
            atomic_write(data_dir / name, lambda f: shutil.copyfileobj(src, f))


def download(url, tmp, compress):
    with urllib.request.urlopen(url, timeout=60) as response:
        with (gzip.open(tmp, "wb") if compress else open(tmp, "wb")) as out:
            shutil.copyfileobj(response, out)


def download_mnist(name, tmp):
    """One of MNIST's .gz files through torchvision's mirrors (it checks the file's md5)."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url
    md5 = dict(MNIST.resources)[Path(name).name]
    for mirror in MNIST.mirrors:
        try:
            download_url(f"{mirror}{Path(name).name}", root=tmp.parent, filename=tmp.name, md5=md5)
            return
        except OSError as e:
            print(
                f"failed to download {Path(name).name} from {mirror} ({e}); trying the next mirror")
    raise DataError(f"could not download {name} from any of torchvision's MNIST mirrors")


def main():
    data_dir = paths.data_dir()
    source = os.environ.get("VAE_DATA_SOURCE")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(
            f"Cannot create the data folder {data_dir} ({e}); set VAE_DATA_DIR to a writable "
            "folder."
        )
    for name in DATA_FILES:
        if is_good(data_dir / name, name):
            continue
        if source:
            src = Path(source) / name
            if not src.is_file():
                sys.exit(
                    f"{src} does not exist: VAE_DATA_SOURCE={source} should hold the layout of "
                    "docs/data.md"
                )
            print(f"copy      {src} -> {data_dir / name}")
            place(name, data_dir, lambda tmp: shutil.copyfile(src, tmp))
        elif name.startswith("MNIST/"):
            print(f"download  {name} (torchvision's mirrors) -> {data_dir / name}")
            place(name, data_dir, lambda tmp: download_mnist(name, tmp))
        else:
            print(f"download  {URLS[name]} -> {data_dir / name}")
            place(name, data_dir,
                  lambda tmp: download(URLS[name], tmp, compress=name.endswith(".gz")))
    for name in DATA_FILES:  # every file must now be present and correct
        data_file(data_dir, name)
    print(f"data ready in {data_dir} ({len(DATA_FILES)} files, checksums verified)")


if __name__ == "__main__":
    try:
        main()
    except (DataError, OSError) as e:
        sys.exit(f"make data failed: {e}")
