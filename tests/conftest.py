"""Helpers shared by the tests. The project is imported as installed (`make setup`: pip install -e .).

Tests marked `slow` run notebooks, make or whole training runs; `make test-fast` leaves them out.
"""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vae_core as vc
from aevb import data, paths

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def pytest_addoption(parser):
    parser.addoption("--refresh-golden", action="store_true",
                     help="rewrite tests/golden/ from the tiny runs of tests/test_golden.py instead of checking them")


def pytest_terminal_summary(terminalreporter):
    """The CPU the golden values were checked on (their kernels differ between CPUs: test_golden.py),
    said at the end of every run, -q included."""
    terminalreporter.write_line(cpu_line())


def cpu_line():
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    return f"CPU: {model}, {os.cpu_count()} cores; torch {torch.__version__}, CPU capability " \
           f"{torch.backends.cpu.get_cpu_capability()}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist_subset():
    """3000 training and 1000 test MNIST digits (grey levels)."""
    x, _ = data.load_mnist(None, "train")
    xt, _ = data.load_mnist(None, "test")
    return x[:3000], xt[:1000]


def small_model(likelihood="bernoulli", x_dim=12, z_dim=2):
    # A larger init than the paper's 0.01 so that q(z|x) and p(x|z) really depend on their inputs.
    return vc.VAE(x_dim, z_dim, hidden=(16,), likelihood=likelihood, init_std=0.5)


def exact_log_px(model, x, lim=7.0, n=601):
    """log p(x) by quadrature over a 2-D latent grid (the prior's mass outside +-7 is negligible)."""
    grid = torch.linspace(-lim, lim, n)
    z = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        log_joint = model.log_px_given_z(x[:, None, :], model.decode(z)[None]) + vc.log_standard_normal(z)
    return torch.logsumexp(log_joint.double(), dim=1) + 2 * math.log(grid[1] - grid[0])


def without_wall_time(history):
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in history]


def changed_parameters(before, model):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def run_notebook(out_dir, *params, name="train"):
    """scripts/run_notebook.py on notebooks/<name>.ipynb, writing out_dir/<name>.ipynb."""
    cmd = [PY, str(ROOT / "scripts" / "run_notebook.py"), str(ROOT / "notebooks" / f"{name}.ipynb"),
           str(Path(out_dir) / f"{name}.ipynb"), *map(str, params)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def make_paper(out, *extra):
    """`make paper PROFILE=smoke` into the folder `out` (runs, figures, build and a data folder of its own)."""
    cmd = ["make", "-C", str(ROOT), "paper", "PROFILE=smoke", f"RUNS={out}/runs", f"FIGURES={out}/figures",
           f"BUILD={out}/build", *extra]  # RESULTS: $(BUILD)/RESULTS.md in the smoke profile
    # a fresh data folder that make data fills from the project's: runs then load from it all at once
    env = {**os.environ, "VAE_DATA_DIR": str(out / "data"), "VAE_DATA_SOURCE": str(paths.data_dir())}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def repository_status():
    """`git status --porcelain --ignored` of the repository as a set of lines: what is there that git did not
    have, ignored files included (a stray file shows, or the new folder that holds it)."""
    result = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    return set(result.stdout.splitlines())


# Where a build or a run may write inside the repository (the Makefile's RUNS, FIGURES, BUILD and VAE_DATA_DIR
# by default), and Python's caches of the modules it imports.
MAY_WRITE = ("runs/", "figures/", "build/", "data/")


def written_outside(before, after):
    """The files that appeared between two repository_status() calls outside MAY_WRITE."""
    new = [line[3:] for line in sorted(after - before)]
    return [p for p in new if not p.startswith(MAY_WRITE) and "__pycache__/" not in p]


SMOKE_PAPER_STATUS = {}  # the repository's status before and after the shared smoke build


@pytest.fixture(scope="session")
def smoke_paper(tmp_path_factory):
    """One `make -j4 paper PROFILE=smoke` shared by every slow test that reads a build: (folder, make's log).
    A test that changes the build (deletes a figure, edits a run) restores what the other tests read."""
    out = tmp_path_factory.mktemp("paper")
    SMOKE_PAPER_STATUS["before"] = repository_status()
    log = make_paper(out, "-j4")
    SMOKE_PAPER_STATUS["after"] = repository_status()
    return out, log


# ---- a headless Chromium for the tests that look at a page as a reader does --------------------------------
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
                  "--window-size=1400,1800")


@pytest.fixture
def chromium():
    """A function that opens a headless Chromium under selenium (its profile in a folder it is given, the
    browser's console log kept); skipped where Chromium or chromedriver is not installed, failed on CI."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: chromium and chromedriver are missing (make browser)")
        pytest.skip("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver; "
                    "macOS: brew install --cask chromium and brew install chromedriver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    def open_browser(profile_dir):
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={Path(profile_dir) / 'chromium-profile'}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    return open_browser
