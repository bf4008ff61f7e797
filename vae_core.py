"""Auto-Encoding Variational Bayes (Kingma & Welling, 2013) and its wake-sleep baseline
(Hinton, Dayan, Frey & Neal, 1995) in one small module: data, model, training, evaluation, runs.

Conventions: every per-datapoint quantity is in nats; `elbo`, `recon` (= E_q log p(x|z)) and
`log_px` are log-likelihoods (higher is better); `kl` = KL(q(z|x) || p(z)) >= 0.
"""
import csv
import gzip
import hashlib
import io
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PROJECT_DIR = Path(__file__).resolve().parent
# Recorded in every run's config; bump it when a change alters what training computes, so that
# finished runs made by the older code are not reused.
CODE_VERSION = 1
LOG_2PI = math.log(2 * math.pi)

# ----------------------------------------------------------------------------------------------
# Data

# Every file the project reads, relative to the data folder, with its SHA256. For Larochelle's
# binarized MNIST the hash is of the uncompressed .amat text, so a copy compressed by any gzip
# verifies (these equal the checksums TensorFlow Datasets publishes for his files).
DATA_FILES = {
    "MNIST/raw/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "MNIST/raw/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "MNIST/raw/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "frey/frey_rawface.mat": "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
    "binarized_mnist/binarized_mnist_train.amat.gz": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "binarized_mnist/binarized_mnist_valid.amat.gz": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "binarized_mnist/binarized_mnist_test.amat.gz": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
GET_DATA_HINT = ("Run `make data` (it copies from $VAE_DATA_SOURCE when set, otherwise downloads), "
                 "or set VAE_DATA_DIR to a folder that already holds the files (layout in README.md).")
FREY_N_TEST = 200  # Frey Face: a fixed random 200 of the 1965 frames are the test set


class DataError(RuntimeError):
    """A data file is missing, unreadable or corrupt; the message says how to get a good copy."""


def default_data_dir():
    return Path(os.environ.get("VAE_DATA_DIR") or PROJECT_DIR / "data")


def file_sha256(path, name=None):
    """SHA256 of the data file `name` (default: path's name), of its decompressed content for `.amat.gz`."""
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
    path = Path(data_dir or default_data_dir()) / name
    if not path.is_file():
        raise DataError(f"Missing data file {path}. {GET_DATA_HINT}")
    try:
        stat = path.stat()
        digest = _verified(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"Cannot read data file {path} ({e}). Delete it and run `make data`.") from e
    if digest != DATA_FILES[name]:
        raise DataError(f"Data file {path} is corrupt or truncated (sha256 {digest[:12]}..., expected "
                        f"{DATA_FILES[name][:12]}...). Delete it and run `make data` for a good copy.")
    return path


@lru_cache(maxsize=None)
def _mnist_tensors(data_dir, train):
    """MNIST through torchvision, once per process: uint8 images [N, 784] and labels [N]."""
    from torchvision.datasets import MNIST
    prefix = "train" if train else "t10k"
    for kind in ("images-idx3", "labels-idx1"):
        data_file(data_dir, f"MNIST/raw/{prefix}-{kind}-ubyte.gz")
    # download=True only unpacks here: torchvision finds the verified .gz files and fetches nothing
    ds = MNIST(root=data_dir, train=train, download=True)
    return ds.data.reshape(len(ds.data), 784), ds.targets


def load_mnist(data_dir=None, split="train", binarize="none"):
    """MNIST as one float tensor [N, 784] in [0, 1] plus labels [N] (None for `static`).

    binarize: "none"    grey levels / 255 (what the replication report trained on);
              "dynamic" grey levels for split="train" (train with `dynamic_binarization=True` for a
                        fresh Bernoulli draw of every image each epoch); other splits are binarized
                        once with a fixed seed so that evaluation is repeatable;
              "static"  Larochelle's fixed binarization, splits train (50k) / valid (10k) / test (10k).
    """
    data_dir = str(Path(data_dir or default_data_dir()))
    if binarize == "static":
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split={split!r}: static binarized MNIST has 'train', 'valid', 'test'")
        path = data_file(data_dir, f"binarized_mnist/binarized_mnist_{split}.amat.gz")
        with gzip.open(path, "rb") as f:
            text = np.frombuffer(f.read(), dtype=np.uint8)
        rows = text.reshape(-1, 784 * 2)  # each line: 784 digits, each followed by ' ' or '\n'
        return torch.from_numpy(rows[:, ::2] - ord("0")).float(), None
    if binarize not in ("none", "dynamic"):
        raise ValueError(f"binarize={binarize!r}: expected 'none', 'dynamic' or 'static'")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: MNIST has 'train' and 'test' (a 'valid' split exists for "
                         "binarize='static')")
    images, labels = _mnist_tensors(data_dir, split == "train")
    x = images.float() / 255
    if binarize == "dynamic" and split != "train":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    return x, labels.clone()


def load_frey(data_dir=None, split="all"):
    """Frey Face: [1965, 560] in [0, 1] (20x28 images, row-major 28 rows of 20 pixels).

    split="train" / "test": a fixed random permutation (numpy default_rng(0)); its last
    FREY_N_TEST = 200 frames are the test set, the other 1765 the training set.
    """
    from scipy.io import loadmat
    path = data_file(data_dir, "frey/frey_rawface.mat")
    x = torch.from_numpy(loadmat(path)["ff"].T.copy()).float() / 255
    if split == "all":
        return x
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))
    if split == "train":
        return x[order[:-FREY_N_TEST]]
    if split == "test":
        return x[order[-FREY_N_TEST:]]
    raise ValueError(f"split={split!r}: expected 'all', 'train' or 'test'")


# ----------------------------------------------------------------------------------------------
# Model

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(sizes, activation):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard normal prior p(z), Bernoulli or Gaussian decoder p(x|z)."""

    def __init__(self, x_dim, z_dim, hidden=(500,), activation="tanh", likelihood="bernoulli",
                 init_std=0.01):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood={likelihood!r}: expected 'bernoulli' or 'gaussian'")
        if min(x_dim, z_dim, *hidden) < 1 or not hidden:
            raise ValueError(f"x_dim, z_dim and every hidden size must be >= 1 (got {x_dim}, {z_dim}, {hidden})")
        self.config = dict(x_dim=x_dim, z_dim=z_dim, hidden=list(hidden), activation=activation,
                           likelihood=likelihood, init_std=init_std)
        self.x_dim, self.z_dim, self.likelihood = x_dim, z_dim, likelihood
        x_out = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.encoder = mlp([x_dim, *hidden, 2 * z_dim], activation)  # recognition model, phi
        self.decoder = mlp([z_dim, *hidden[::-1], x_out], activation)  # generative model, theta
        for p in self.parameters():  # Kingma & Welling, Sec. 5: parameters initialized N(0, 0.01)
            nn.init.normal_(p, 0.0, init_std)

    def encode(self, x):
        z_loc, z_logvar = self.encoder(x).chunk(2, dim=-1)
        return z_loc, z_logvar

    def decode(self, z):
        """Bernoulli: logits. Gaussian: (x_loc, x_logvar), the mean through a sigmoid (paper, App. C.2)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return out
        x_loc, x_logvar = out.chunk(2, dim=-1)
        return torch.sigmoid(x_loc), x_logvar

    def log_px_given_z(self, x, decoded):
        """log p(x|z) summed over pixels; for grey-level x the Bernoulli case is the (negated) BCE."""
        if self.likelihood == "bernoulli":  # x log sigmoid(l) + (1 - x) log sigmoid(-l), stably
            return (x * decoded - F.softplus(decoded)).sum(-1)
        x_loc, x_logvar = decoded
        return -0.5 * (LOG_2PI + x_logvar + (x - x_loc).pow(2) * torch.exp(-x_logvar)).sum(-1)

    def sample_x(self, z):
        """x ~ p(x|z): Bernoulli or Gaussian draws (wake-sleep's dreams)."""
        decoded = self.decode(z)
        if self.likelihood == "bernoulli":
            return torch.bernoulli(torch.sigmoid(decoded))
        x_loc, x_logvar = decoded
        return x_loc + torch.exp(0.5 * x_logvar) * torch.randn_like(x_loc)

    def mean_x(self, z):
        """E[x|z], what the figures show."""
        decoded = self.decode(z)
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded[0]

    def elbo(self, x, n_samples=1):
        """Per-datapoint SGVB estimate (paper, Eq. 10): (elbo, E_q log p(x|z), KL(q||p)) with L samples."""
        z_loc, z_logvar = self.encode(x)
        eps = torch.randn((n_samples, *z_loc.shape), device=x.device, dtype=x.dtype)
        z = z_loc + torch.exp(0.5 * z_logvar) * eps  # reparameterization trick
        log_px_given_z = self.log_px_given_z(x, self.decode(z)).mean(0)
        # see Appendix B of Kingma & Welling: -KL = 1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)
        kl = 0.5 * (z_loc.pow(2) + z_logvar.exp() - 1 - z_logvar).sum(-1)
        return log_px_given_z - kl, log_px_given_z, kl


def log_normal(z, loc, logvar):
    return -0.5 * (LOG_2PI + logvar + (z - loc).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z):
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


# ----------------------------------------------------------------------------------------------
# Objectives: one minibatch each, returning the loss to minimize and the batch's ELBO terms

def aevb_loss(model, x, n_samples=1):
    elbo, log_px_given_z, kl = model.elbo(x, n_samples)
    return -elbo.mean(), log_px_given_z.detach(), kl.detach()


def wake_sleep_losses(model, x, n_samples=1):
    """(wake_loss, sleep_loss, log p(x|z), KL) for Hinton et al.'s (1995) wake-sleep algorithm.

    Wake: z ~ q(z|x) drawn without a gradient path, so the wake loss -[log p(x|z) + log p(z)]
    reaches only the decoder (theta; log p(z) has no parameters). Sleep: dream z ~ p(z),
    x ~ p(x|z) without a gradient path, so the sleep loss -log q(z|x) reaches only the encoder (phi).
    """
    with torch.no_grad():
        z_loc, z_logvar = model.encode(x)
        z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn((n_samples, *z_loc.shape), device=x.device)
        kl = 0.5 * (z_loc.pow(2) + z_logvar.exp() - 1 - z_logvar).sum(-1)
    log_px_given_z = model.log_px_given_z(x, model.decode(z)).mean(0)
    wake_loss = -log_px_given_z.mean()
    with torch.no_grad():
        z_dream = torch.randn((len(x) * n_samples, model.z_dim), device=x.device)
        x_dream = model.sample_x(z_dream)
    sleep_loss = -log_normal(z_dream, *model.encode(x_dream)).mean()
    return wake_loss, sleep_loss, log_px_given_z.detach(), kl


ALGORITHMS = ("aevb", "wake_sleep")


# ----------------------------------------------------------------------------------------------
# Evaluation

@contextmanager
def seeded_rng(device, seed):
    """Run a block on its own seeded RNG stream, then restore the caller's (CPU and `device`)."""
    devices = [] if device.type == "cpu" else [device.index or 0]
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield


@torch.inference_mode()
def evaluate(model, x, n_samples=1, batch_size=10_000, seed=0):
    """Mean ELBO, E_q log p(x|z) and KL over x (one z sample per point, like the report's test loss).

    Uses its own seeded RNG so evaluating never changes the training stream.
    """
    device = next(model.parameters()).device
    with seeded_rng(device, seed):
        totals = torch.zeros(3, device=device, dtype=torch.float64)
        for i in range(0, len(x), batch_size):
            terms = model.elbo(x[i:i + batch_size].to(device), n_samples)
            totals += torch.stack([t.sum() for t in terms]).double()
    elbo, recon, kl = (totals / len(x)).tolist()
    return {"elbo": elbo, "recon": recon, "kl": kl}


@torch.inference_mode()
def log_likelihood(model, x, k=5000, seed=0, max_elements=1 << 20):
    """Importance-sampled log p(x) per datapoint with q(z|x) as proposal (Burda et al., 2015):
    log (1/k) sum_i p(x, z_i) / q(z_i|x). Works in chunks of samples and datapoints so that memory
    stays near `max_elements` floats whatever k and N; a running logsumexp combines the chunks.
    Returns a float64 tensor [N] on the CPU.
    """
    device = next(model.parameters()).device
    n_points = max(1, min(len(x), max_elements // model.x_dim))
    n_draws = max(1, min(k, max_elements // (n_points * model.x_dim)))
    out = []
    with seeded_rng(device, seed):
        for i in range(0, len(x), n_points):
            xb = x[i:i + n_points].to(device)
            z_loc, z_logvar = model.encode(xb)
            log_sum_w = torch.full((len(xb),), -math.inf, device=device, dtype=torch.float64)
            for j in range(0, k, n_draws):
                eps = torch.randn((min(n_draws, k - j), *z_loc.shape), device=device)
                z = z_loc + torch.exp(0.5 * z_logvar) * eps
                log_w = (model.log_px_given_z(xb, model.decode(z)) + log_standard_normal(z)
                         - log_normal(z, z_loc, z_logvar))
                log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w.double(), dim=0))
            out.append((log_sum_w - math.log(k)).cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# Devices

def select_device(name="auto"):
    """'auto' picks cuda, then mps, then cpu; an explicit name is honoured or refused clearly."""
    name = str(name)
    has_mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={name!r} but CUDA is not available on this machine; "
                               "use device='auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps" and not has_mps:
        raise RuntimeError(f"device={name!r} but MPS is not available on this machine; use 'auto' or 'cpu'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


# ----------------------------------------------------------------------------------------------
# Training: one loop for both algorithms

class TrainingDiverged(RuntimeError):
    pass


def log_spaced_points(total, n=20, first=10_000):
    """About n training-sample counts, log-spaced from `first` to `total` (Kingma's Figure 2 x-axis)."""
    first = min(first, max(1, total // 10))
    return sorted({int(round(v)) for v in np.geomspace(first, total, n)})


def make_optimizer(params, name, lr, weight_decay, device):
    if name == "adam":  # fused: one kernel for all parameters (CPU, CUDA and MPS)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "adagrad":  # Kingma & Welling's optimizer; its fused kernel is CPU-only
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay,
                                   fused=True if device.type == "cpu" else None)
    raise ValueError(f"optimizer={name!r}: expected 'adam' or 'adagrad'")


def _check_finite(model, sums, samples_from, samples_to):
    """Raise with when and what if a training term or a parameter stopped being finite."""
    bad = [name for name, v in zip(("log p(x|z)", "KL"), sums.tolist()) if not math.isfinite(v)]
    bad += [f"parameter {n}" for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"training diverged between {samples_from:,} and {samples_to:,} training "
                               f"samples: non-finite {', '.join(bad)}. Try a smaller learning rate.")


def train(model, train_x, algorithm="aevb", *, samples=None, epochs=None, batch_size=100, n_samples=1,
          optimizer="adam", lr=1e-3, weight_prior=False, seed=0, device="auto", eval_at=None,
          test_x=None, eval_size=10_000, dynamic_binarization=False, checkpoint_path=None,
          checkpoint_every=None, progress="lines"):
    """Train `model` on `train_x` [N, D] with AEVB or wake-sleep; return the history (a list of rows).

    Budget: `samples` (training samples evaluated, Kingma's x-axis) or `epochs` (passes over train_x).
    weight_prior: add log p(theta) with p(theta) = N(0, I), i.e. weight decay 1/N on the
    per-datapoint objective (Kingma & Welling, Sec. 5). eval_at: the sample counts at which train
    (first `eval_size` points) and test lower bounds are logged; the final count is always one.
    checkpoint_path: save model, optimizer, RNG and history there at epoch ends (every
    `checkpoint_every` samples, default each epoch) and resume from it when it exists.
    progress: "lines" (one line per evaluation), "bar" (tqdm) or "none".
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}: expected one of {ALGORITHMS}")
    if (samples is None) == (epochs is None):
        raise ValueError("give exactly one of samples= or epochs=")
    n_train = len(train_x)
    if not 1 <= batch_size <= n_train:
        raise ValueError(f"batch_size={batch_size} must be between 1 and the {n_train} training points")
    total = int(samples) if samples is not None else int(epochs * n_train)
    if total < batch_size or n_samples < 1 or lr <= 0:
        raise ValueError(f"need samples >= batch_size, n_samples >= 1 and lr > 0 "
                         f"(got {total}, {n_samples}, {lr})")
    device = select_device(device)
    torch.manual_seed(seed)
    model.to(device)
    train_x = train_x.to(device)
    eval_train_x = train_x[:eval_size]
    if dynamic_binarization:  # a fixed draw for the train-set bound, like the binarized test set
        eval_train_x = torch.bernoulli(eval_train_x, generator=torch.Generator(device).manual_seed(seed))
    test_x = None if test_x is None else test_x.to(device)
    points = sorted({int(p) for p in (eval_at or log_spaced_points(total)) if 0 < p < total} | {total})
    opt = make_optimizer(model.parameters(), optimizer, lr, 1.0 / n_train if weight_prior else 0.0, device)
    steps_per_epoch = n_train // batch_size  # drop the last partial batch: every step sees M points

    history, samples_seen, wall_offset = [], 0, 0.0
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # sum of log p(x|z), KL since last eval
    sums_from = 0
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_device"] is not None:
            torch.get_device_module(device.type).set_rng_state(state["rng_device"])
        history, samples_seen, wall_offset = state["history"], state["samples_seen"], state["wall_time"]
        sums, sums_from = state["sums"].to(device), state["sums_from"]
        points = [p for p in points if p > samples_seen]
    checkpoint_every = checkpoint_every or n_train
    last_checkpoint = samples_seen
    step = {"aevb": _aevb_step, "wake_sleep": _wake_sleep_step}[algorithm]
    bar = None
    if progress == "bar":
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=samples_seen, unit="sample", unit_scale=True)
    start = time.perf_counter()

    while samples_seen < total:
        order = torch.randperm(n_train, device=device)  # a fresh shuffle each epoch
        for i in range(steps_per_epoch):
            xb = train_x[order[i * batch_size:(i + 1) * batch_size]]
            if dynamic_binarization:
                xb = torch.bernoulli(xb)
            sums += step(model, opt, xb, n_samples)  # stays on the device: no host sync per step
            samples_seen += batch_size
            if samples_seen >= points[0]:
                n_seen = samples_seen - sums_from
                _check_finite(model, sums, sums_from, samples_seen)
                row = {"samples": samples_seen, "epoch": samples_seen / n_train,
                       "running_elbo": (sums[0] - sums[1]).item() / n_seen}
                model.eval()
                for prefix, data in (("train", eval_train_x), ("test", test_x)):
                    if data is not None:
                        for key, value in evaluate(model, data, seed=seed).items():
                            row[f"{prefix}_{key}"] = value
                model.train()
                row["wall_time"] = wall_offset + time.perf_counter() - start
                history.append(row)
                sums.zero_()
                sums_from = samples_seen
                while points and points[0] <= samples_seen:
                    points.pop(0)
                if progress == "lines":
                    print(_format_row(row, total, algorithm), flush=True)
                elif bar is not None:
                    bar.update(samples_seen - bar.n)
                    bar.set_postfix(train_elbo=f"{row['train_elbo']:.2f}")
            if samples_seen >= total:
                break
        if checkpoint_path is not None and samples_seen < total and samples_seen - last_checkpoint >= checkpoint_every:
            _check_finite(model, sums, sums_from, samples_seen)  # never checkpoint a diverged model
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "rng_cpu": torch.get_rng_state(),
                         "rng_device": None if device.type == "cpu" else torch.get_device_module(device.type).get_rng_state(),
                         "history": history, "samples_seen": samples_seen, "sums": sums, "sums_from": sums_from,
                         "wall_time": wall_offset + time.perf_counter() - start}, checkpoint_path)
            last_checkpoint = samples_seen
    if bar is not None:
        bar.close()
    return history


def _aevb_step(model, opt, xb, n_samples):
    loss, log_px_given_z, kl = aevb_loss(model, xb, n_samples)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([log_px_given_z.sum(), kl.sum()])


def _wake_sleep_step(model, opt, xb, n_samples):
    wake_loss, sleep_loss, log_px_given_z, kl = wake_sleep_losses(model, xb, n_samples)
    opt.zero_grad(set_to_none=True)
    # The two losses share no parameters (each phase's sample is drawn without a gradient path),
    # so one backward pass and one step make exactly the wake update of theta and the sleep update of phi.
    (wake_loss + sleep_loss).backward()
    opt.step()
    return torch.stack([log_px_given_z.sum(), kl.sum()])


def train_aevb(model, train_x, **kwargs):
    """Auto-Encoding VB (Kingma & Welling, Algorithm 1): ascend the SGVB estimate of the ELBO
    in encoder and decoder jointly. Keywords as in `train`."""
    return train(model, train_x, "aevb", **kwargs)


def train_wake_sleep(model, train_x, **kwargs):
    """Wake-sleep (Hinton, Dayan, Frey & Neal, 1995), Kingma & Welling's baseline: see
    `wake_sleep_losses`. Its lower bound is evaluated with the same ELBO. Keywords as in `train`."""
    return train(model, train_x, "wake_sleep", **kwargs)


def _format_row(row, total, algorithm):
    text = f"[{algorithm}] {row['samples']:>11,}/{total:,} samples  epoch {row['epoch']:6.2f}  " \
           f"train ELBO {row['train_elbo']:9.2f}"
    if "test_elbo" in row:
        text += f"  test ELBO {row['test_elbo']:9.2f} (recon {row['test_recon']:8.2f}, KL {row['test_kl']:6.2f})"
    return text + f"  {row['wall_time']:7.1f}s"


# ----------------------------------------------------------------------------------------------
# Run folders: config.json, history.csv, metrics.json (written last: it marks a finished run), model.pt

def _atomic_write(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj, path):
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_run(run_dir, config, history, model, extra_metrics=None):
    """Write a finished run. metrics.json holds the final train/test ELBO, reconstruction and KL, seed,
    device, torch version and wall time; it is written last, so a folder without it is unfinished."""
    run_dir = Path(run_dir)
    final = history[-1]
    metrics = {k: final[k] for k in final if k.startswith(("train_", "test_"))}
    metrics.update(samples=final["samples"], epochs=final["epoch"], wall_time=final["wall_time"],
                   seed=config.get("seed"), device=str(next(model.parameters()).device),
                   torch_version=torch.__version__, **(extra_metrics or {}))
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", buffer.getvalue())
    atomic_save({"model_config": model.config, "state_dict": model.state_dict()}, run_dir / "model.pt")
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def load_run(run_dir, device="cpu"):
    """A finished run as a dict: config, history (list of rows), metrics, model (a VAE in eval mode)."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no metrics.json); train it first "
                                "(make runs, or the training notebook)")
    with open(run_dir / "history.csv", newline="") as f:
        history = [{k: (float(v) if v != "" else math.nan) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in history:
        row["samples"] = int(row["samples"])
    saved = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
    model = VAE(**saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    return {"config": json.loads((run_dir / "config.json").read_text()), "history": history,
            "metrics": json.loads((run_dir / "metrics.json").read_text()), "model": model.to(device).eval()}
