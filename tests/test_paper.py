"""`make -j4 paper PROFILE=smoke` end to end into a temporary folder, from a fresh data folder: every
figure, notebook and page."""
import base64
import csv
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from aevb import grid, paths
from aevb.figures import FIGURES, notebooks
from aevb.scorecard import published_numbers
from conftest import ROOT

pytestmark = pytest.mark.slow


def make_paper(out, *extra):
    cmd = ["make", "-C", str(ROOT), "paper", "PROFILE=smoke", f"RUNS={out}/runs", f"FIGURES={out}/figures",
           f"BUILD={out}/build", *extra]
    # a fresh data folder that make data fills from the project's: runs then load from it all at once
    env = {**os.environ, "VAE_DATA_DIR": str(out / "data"), "VAE_DATA_SOURCE": str(paths.data_dir())}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    log = make_paper(out, "-j4")
    return out, log


def test_every_figure_is_a_valid_png_and_pdf(paper):
    out, _ = paper
    for name in FIGURES:
        png, pdf = out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        import matplotlib.image
        height, width = matplotlib.image.imread(png).shape[:2]
        assert height > 50 and width > 50, png
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF") and b"%%EOF" in data[-64:], pdf
    leftovers = [p.name for p in (out / "figures").iterdir() if ".tmp" in p.name]
    assert not leftovers


def test_every_run_finished_and_executed_notebooks_have_no_errors(paper):
    out, _ = paper
    assert sorted(p.parent for p in (out / "runs").glob("*/*/metrics.json")) == \
        sorted(r.folder(out / "runs") for r in grid.runs(profile="smoke"))
    executed = sorted((out / "build" / "notebooks").glob("*.ipynb"))
    assert len(executed) == len(grid.runs(profile="smoke")) + len(notebooks())
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.output_type == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}"
        assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), path.name


def test_report_table1_has_the_reports_rows_and_finite_values(paper):
    out, _ = paper
    with open(out / "figures" / "report_table1.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows[1:]] == ["average loss", "average BCE", "average KLD"]
    values = [float(v) for r in rows[1:] for v in r[1:]]
    assert len(values) == 18 and all(math.isfinite(v) for v in values)  # means and sds over 3 seeds
    assert "101.1053" in {f"{v:.4f}" for v in values}  # the report's AEVB loss stands beside ours


def test_scorecard_has_every_published_row_and_the_index_shows_it(paper):
    out, _ = paper
    with open(out / "figures" / "scorecard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(published_numbers())
    # the smoke profile trains 2,000 samples: nothing is judged at the papers' scale
    assert {r["verdict"] for r in rows} == {"not run at this scale", "out of scope", "n/a (hardware)"}
    ran = [r for r in rows if r["verdict"] == "not run at this scale"]
    assert all(r["samples_trained"] == "2000" and math.isfinite(float(r["ours"])) for r in ran)
    page = (out / "build" / "html" / "index.html").read_text()
    assert page.count('<td class="not-run-at-this-scale">') == len(ran)
    assert "Scorecard" in page and "Test log-likelihoods" in page


def test_kingma_runs_choose_their_step_size_and_main_runs_have_a_test_log_likelihood(paper):
    out, _ = paper
    kingma_runs = grid.runs(protocol="kingma", profile="smoke")
    assert len(kingma_runs) > 0
    for run in kingma_runs:  # MNIST and Frey Face: every kingma run chose its step
        metrics = json.loads((run.folder(out / "runs") / "metrics.json").read_text())
        assert metrics["lr"] in (0.01, 0.02, 0.1) and set(metrics["lr_trial_train_elbo"]) == {"0.01", "0.02", "0.1"}
        assert metrics["lr_trial_train_elbo"][str(metrics["lr"])] == max(metrics["lr_trial_train_elbo"].values())
    with open(out / "figures" / "test_log_likelihood.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    main = {r.name for r in grid.runs(profile="smoke") if r.estimates}
    expected = main | {r.name for r in grid.runs(protocol=["burda", "burda-static"])}
    assert {r["run"] for r in rows} == expected and len(main) == 12 and len(expected) == 16
    assert all(math.isfinite(float(r["test_log_px_is"])) and r["points"] == "20" for r in rows)
    # the main runs are also judged by the estimators that do not use their own encoder
    assert all(math.isfinite(float(r["test_log_px_refit"])) and math.isfinite(float(r["test_log_px_appd"]))
               for r in rows if r["run"] in main)


def test_index_embeds_every_figure_and_links_every_notebook(paper):
    out, _ = paper
    html_dir = out / "build" / "html"
    page = (html_dir / "index.html").read_text()
    for name, (caption, notebook) in FIGURES.items():
        match = re.search(rf'<figure id="{name}"><img src="data:image/png;base64,([^"]+)"', page)
        assert match, name
        assert base64.b64decode(match.group(1)) == (out / "figures" / f"{name}.png").read_bytes()
        assert f'href="{notebook}.html"' in page
    for path in (out / "build" / "notebooks").glob("*.ipynb"):
        assert f'href="{path.stem}.html"' in page, path.stem
        assert (html_dir / f"{path.stem}.html").stat().st_size > 10_000
    assert "smoke" in page and "cpu" in page


def test_second_make_paper_reuses_finished_runs(paper):
    out, _ = paper
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*/*")}
    log = make_paper(out)
    assert "notebooks/train.ipynb" not in log, log[-2000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*/*")} == finished


def test_index_renders_in_headless_chromium(paper):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    out, _ = paper
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={out / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)
    try:
        driver.get((out / "build" / "html" / "index.html").as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == len(FIGURES) and min(widths) > 0, widths
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


# ---- every smoke run learns, and make redoes exactly what changed -----------------------------------------

def test_step_size_trials_learn_so_their_scores_differ(paper):
    """A trial that never updates (a warm-up longer than the trial) scores the initialization, the same for
    every step size, and the choice is then a tie: every trial's scores differ here."""
    out, _ = paper
    trials = {}
    for run in grid.runs(profile="smoke"):
        metrics = json.loads((run.folder(out / "runs") / "metrics.json").read_text())
        if "lr_trial_train_elbo" in metrics:
            trials[run.name] = metrics["lr_trial_train_elbo"]
    assert len(trials) == len([r for r in grid.runs(profile="smoke") if r.protocol.startswith("kingma")
                               and r.protocol != "kingma-lr0.02"]) > 20
    ties = {name: scores for name, scores in trials.items() if len(set(scores.values())) < len(scores)}
    assert not ties, ties


def test_aevb_and_wake_sleep_runs_of_one_setting_end_with_different_numbers(paper):
    """Two algorithms that both trained cannot end at the same bound: every AEVB run and its wake-sleep twin
    (same protocol, Nz and seed) differ in every metric of the final model."""
    out, _ = paper
    pairs = 0
    for run in grid.runs(profile="smoke", algorithm="aevb"):
        twins = grid.runs(profile="smoke", algorithm="wake_sleep", dataset=run.dataset, protocol=run.protocol,
                          latent_dim=run.latent_dim, seed=run.seed)
        for twin in twins:
            a, b = (json.loads((r.folder(out / "runs") / "metrics.json").read_text()) for r in (run, twin))
            same = [k for k in ("train_elbo", "test_elbo", "test_recon", "test_kl") if a[k] == b[k]]
            assert not same, (run.name, twin.name, same)
            pairs += 1
    assert pairs >= 15


def notebooks_run(log):
    return sorted(set(re.findall(r"scripts/run_notebook\.py notebooks/(\w+)\.ipynb", log)))


def mtimes(*folders):
    return {p: p.stat().st_mtime_ns for folder in folders for p in folder.rglob("*") if p.is_file()}


def test_a_make_paper_with_nothing_changed_rewrites_nothing(paper):
    out, _ = paper
    before = mtimes(out / "runs", out / "figures", out / "build")
    log = make_paper(out)
    assert notebooks_run(log) == [], log[-3000:]
    assert mtimes(out / "runs", out / "figures", out / "build") == before


def test_a_changed_run_re_runs_exactly_the_figure_notebooks_that_read_it(paper):
    out, _ = paper
    changed = grid.run("mnist/iwae_z50_burda_s1")
    readers = sorted(nb for nb in grid.NOTEBOOK_RUNS if changed in grid.notebook_runs(nb, profile="smoke"))
    assert readers == ["burda2015", "scorecard"]
    stamps = {nb: (out / "build" / "done" / nb).stat().st_mtime_ns for nb in grid.NOTEBOOK_RUNS}
    runs_before = mtimes(out / "runs")
    metrics = changed.folder(out / "runs") / "metrics.json"
    metrics.touch()  # what make sees of a run trained again
    log = make_paper(out)
    assert notebooks_run(log) == readers, log[-3000:]
    restamped = sorted(nb for nb in grid.NOTEBOOK_RUNS if (out / "build" / "done" / nb).stat().st_mtime_ns != stamps[nb])
    assert restamped == readers
    assert {p: t for p, t in mtimes(out / "runs").items() if p != metrics} == \
        {p: t for p, t in runs_before.items() if p != metrics}  # no run retrained
