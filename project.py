"""What the notebooks share beyond vae_core: paths, parameter checks, run reuse, figure files.

vae_core knows models and training; this module knows the project's folders and its figures.
"""
import fcntl
import hashlib
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Every figure `make paper` produces: file stem -> (what it reproduces, notebook that makes it).
# The index page, the README and the tests all read this table.
FIGURES = {
    "report_fig1_aevb_samples": ("Replication report, Figure 1: random samples from AEVB (Nz = 20)", "replication_report"),
    "report_fig2_wake_sleep_samples": ("Replication report, Figure 2: random samples from wake-sleep (Nz = 20), here the true algorithm", "replication_report"),
    "report_fig3_performance_vs_latent_dim": ("Replication report, Figure 3: final loss (-ELBO) against latent dimension", "replication_report"),
    "report_fig4_training_loss": ("Replication report, Figure 4: training loss of AEVB and wake-sleep (Nz = 20) per epoch", "replication_report"),
    "report_fig5_samples_by_latent_dim": ("Replication report, Figure 5: random samples for each latent dimension", "replication_report"),
    "report_table1": ("Replication report, Table 1: test loss, BCE and KL of wake-sleep and AEVB (Nz = 20) beside the published values", "replication_report"),
    "kingma_fig2_lower_bound": ("Kingma & Welling, Figure 2: lower bound against training samples evaluated, AEVB vs wake-sleep (train solid, test dashed)", "kingma2013"),
    "kingma_fig3_marginal_likelihood": ("Kingma & Welling, Figure 3: estimated marginal log-likelihood of AEVB, wake-sleep and Monte Carlo EM (Nz = 3, N_train 1000 and 50000)", "marginal_likelihood"),
    "kingma_fig4_manifold_mnist": ("Kingma & Welling, Figure 4(b): learned MNIST manifold, Nz = 2", "kingma2013"),
    "kingma_fig4_manifold_frey": ("Kingma & Welling, Figure 4(a): learned Frey Face manifold, Nz = 2", "kingma2013"),
    "kingma_fig5_samples": ("Kingma & Welling, Figure 5: random MNIST samples for Nz = 2, 5, 10, 20", "kingma2013"),
    "latent_scatter_mnist": ("Beyond the papers: MNIST test codes (Nz = 2, posterior means) coloured by digit", "kingma2013"),
    "reconstructions_mnist": ("Beyond the papers: MNIST test digits and their AEVB and wake-sleep reconstructions (Nz = 20)", "kingma2013"),
    "scorecard_differences": ("Scorecard: our value minus the published one, in units of each row's tolerance, for every value run at its published scale", "scorecard"),
    "interpolation_mnist": ("Beyond the papers: decoded linear interpolations between test codes (Nz = 20)", "kingma2013"),
}
TABLES = {"report_table1"}  # written as CSV (and a PNG/PDF rendering of the table)
# CSV tables without a picture: file stem -> (what it holds, notebook that makes it). The index page shows them.
CSV_TABLES = {
    "scorecard": ("Every number and claim the papers publish beside ours, with the protocol, budget, tolerance and a verdict", "scorecard"),
    "test_log_likelihood": ("Test log-likelihoods of the main MNIST runs by importance sampling, beside their lower bounds", "scorecard"),
}


def published_numbers(path=None):
    """published_numbers.csv as {id: row}: every number the papers publish, with its protocol, runs and
    tolerance; `published` and `samples` as floats (published is None for a claim without a number)."""
    import csv
    with open(path or ROOT / "published_numbers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["published"] = float(row["published"]) if row["published"] else None
        row["samples"] = float(row["samples"])
    return {row["id"]: row for row in rows}


def expand_runs(pattern):
    """published_numbers.csv's `runs` patterns: shell-style braces, 'mnist/{aevb,wake_sleep}_z20_*' ->
    ['mnist/aevb_z20_*', 'mnist/wake_sleep_z20_*'], several braces too (not nested); '*' is left for a glob."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [p for alt in m.group(1).split(",") for p in expand_runs(pattern[:m.start()] + alt + pattern[m.end():])]


def enter_project():
    """Make paths from the repository root work the same under papermill and in JupyterLab."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return ROOT


# ---- parameter checks: fail before any work, naming the parameter, its value and what is allowed

def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"parameter {name}={value!r} is not allowed; expected one of {list(allowed)}")


def check_positive(name, value, allow_zero=False, integer=True):
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "an integer" if integer else "a number"
        raise ValueError(f"parameter {name}={value!r} is not allowed; expected {what} "
                         f"{'>= 0' if allow_zero else '> 0'}")


# ---- runs

def config_hash(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def prepare_run(run_dir, config, replace_stale=False):
    """Decide what to do with run_dir for this config: return (finished, checkpoint_path).

    A finished run (metrics.json present) with exactly this config is reused. One with another
    config is refused, or with replace_stale=True (what `make` passes when a run's parameters in
    the Makefile changed) marked unfinished so that it is retrained. Checkpoints are named after
    the config, so a checkpoint of another config is never resumed.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        saved = json.loads((run_dir / "config.json").read_text())
        if saved == config:
            return True, None
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        if not replace_stale:
            raise RuntimeError(f"{run_dir} holds a finished run with another config ({detail}). Delete that "
                               "folder to retrain it, or give this run another run_dir.")
        print(f"{run_dir} holds a finished run with another config ({detail}): retraining it")
        metrics.unlink()  # first, so that an interrupted retraining never looks finished
    checkpoint = run_dir / f"checkpoint-{config_hash(config)}.pt"
    for stale in run_dir.glob("checkpoint-*.pt"):
        if stale != checkpoint:
            stale.unlink()
    return False, checkpoint


@contextmanager
def run_lock(run_dir):
    """Hold an exclusive lock on run_dir while training, so two processes never write one run."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another process is training {run_dir}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- figures

def save_figure(fig, name, figures_dir="figures", dpi=90):
    """Write figures_dir/name.png and .pdf, each atomically (a later run never sees half a file)."""
    if name not in FIGURES:
        raise KeyError(f"{name} is not in project.FIGURES; add it there with its caption")
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        final = figures_dir / f"{name}.{ext}"
        tmp = figures_dir / f".{name}.{os.getpid()}.tmp.{ext}"
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, final)
    return figures_dir / f"{name}.png"


def save_csv(frame, name, figures_dir="figures"):
    """Write the DataFrame `frame` to figures_dir/name.csv atomically (no index column)."""
    if name not in CSV_TABLES and name not in TABLES:
        raise KeyError(f"{name} is not in project.CSV_TABLES; add it there with its caption")
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    tmp = figures_dir / f".{name}.{os.getpid()}.tmp.csv"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, figures_dir / f"{name}.csv")
    return figures_dir / f"{name}.csv"


def image_grid(images, image_shape, nrow, pad=1):
    """A [H, W] numpy array tiling `images` ([N, D] in [0, 1]) with torchvision's make_grid."""
    from torchvision.utils import make_grid
    images = images.detach().cpu().reshape(-1, 1, *image_shape)
    return make_grid(images, nrow=nrow, padding=pad, pad_value=1.0)[0].numpy()
