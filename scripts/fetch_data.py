"""Put every data file into the project's data folder and verify its checksum (`make data`).

From a local copy when VAE_DATA_SOURCE names one (same layout, e.g. ../shared/data), otherwise
by download: MNIST through torchvision, Frey Face and Larochelle's binarized MNIST from their
authors' pages. Files already present and correct are left alone; nothing half-written is left
behind (each file is written to a temporary name, verified, then renamed).
"""
import gzip
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import vae_core  # noqa: E402

URLS = {
    "frey/frey_rawface.mat": "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
    **{f"binarized_mnist/binarized_mnist_{s}.amat.gz":
       f"http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{s}.amat"
       for s in ("train", "valid", "test")},
}


def is_good(path, name):
    try:
        return path.is_file() and vae_core.file_sha256(path, name) == vae_core.DATA_FILES[name]
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def place(name, data_dir, fill):
    """Write data_dir/name through `fill(tmp_path)`, keep it only if its checksum is right."""
    target = data_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        fill(tmp)
        os.chmod(tmp, 0o644)
        if not is_good(tmp, name):
            raise vae_core.DataError(f"{name}: the copy obtained does not have the published checksum")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def download(url, tmp, compress):
    with urllib.request.urlopen(url, timeout=60) as response:
        out = gzip.open(tmp, "wb") if compress else open(tmp, "wb")
        with out:
            shutil.copyfileobj(response, out)


def main():
    data_dir = vae_core.default_data_dir()
    source = os.environ.get("VAE_DATA_SOURCE")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(f"Cannot create the data folder {data_dir} ({e}); set VAE_DATA_DIR to a writable folder.")
    missing = [name for name in vae_core.DATA_FILES if not is_good(data_dir / name, name)]
    for name in missing:
        if source:
            src = Path(source) / name
            if not src.is_file():
                sys.exit(f"{src} does not exist: VAE_DATA_SOURCE={source} should hold the layout of README.md")
            print(f"copy      {src} -> {data_dir / name}")
            place(name, data_dir, lambda tmp: shutil.copyfile(src, tmp))
        elif name.startswith("MNIST/"):
            continue  # torchvision below
        else:
            print(f"download  {URLS[name]} -> {data_dir / name}")
            place(name, data_dir, lambda tmp: download(URLS[name], tmp, compress=name.endswith(".gz")))
    if not source and any(name.startswith("MNIST/") for name in missing):
        from torchvision.datasets import MNIST
        for train in (True, False):  # torchvision checks each file's md5 after downloading it
            MNIST(root=data_dir, train=train, download=True)
    for name in vae_core.DATA_FILES:  # every file must now be present and correct
        vae_core.data_file(data_dir, name)
    print(f"data ready in {data_dir} ({len(vae_core.DATA_FILES)} files, checksums verified)")


if __name__ == "__main__":
    try:
        main()
    except (vae_core.DataError, OSError) as e:
        sys.exit(f"make data failed: {e}")
