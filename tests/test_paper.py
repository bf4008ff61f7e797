"""`make -j4 paper PROFILE=smoke` end to end into a temporary folder, from a fresh data folder: every
figure, notebook and page."""
import base64
import csv
import html
import json
import math
import re

import nbformat
import pytest

from aevb import grid
from aevb.paths import PAPER_SCALE
from aevb.figures import CSV_TABLES, FIGURES, notebooks
from aevb.scorecard import published_numbers, verdicts_by_paper
from conftest import ROOT, SMOKE_PAPER_STATUS, make_paper, written_outside

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper(smoke_paper):
    return smoke_paper


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
    # the smoke profile trains 2,000 samples: nothing is judged at the papers' scale on its own runs; the
    # published paper-scale runs (results/paper-scale) judge the rows they trained at least half of
    at_scale = [r for r in rows if "as published in results/paper-scale" in r["note"]]
    assert bool(at_scale) == bool(list(PAPER_SCALE.glob("*/*/metrics.json")))
    assert all(float(r["samples_trained"]) >= float(r["samples_published"]) / 2 for r in at_scale)
    assert {r["verdict"] for r in rows if r not in at_scale} == \
        {"not run at this scale", "out of scope", "n/a (hardware)"}
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
    expected = main | {r.name for r in grid.runs(protocol=list(grid.BURDA_IMAGES))}
    assert {r["run"] for r in rows} == expected and len(main) == 12 and len(expected) == 12 + 7  # 7 Burda runs
    assert all(math.isfinite(float(r["test_log_px_is"])) and r["points"] == "20" for r in rows)
    # the main runs are also judged by the estimators that do not use their own encoder
    assert all(math.isfinite(float(r["test_log_px_refit"])) and math.isfinite(float(r["test_log_px_appd"]))
               for r in rows if r["run"] in main)


def test_index_embeds_every_figure_and_links_every_notebook(paper):
    out, _ = paper
    html_dir = out / "build" / "html"
    page = (html_dir / "index.html").read_text()
    sections = dict(re.findall(r"<section class='paper' id='([^']+)'>(.*?)</section>", page, re.S))
    for name, figure in FIGURES.items():
        match = re.search(rf'<figure id="{name}"><img src="data:image/png;base64,([^"]+)"', page)
        assert match, name
        assert base64.b64decode(match.group(1)) == (out / "figures" / f"{name}.png").read_bytes()
        assert f'href="{figure.notebook}.html"' in page
        # in its paper's section, as aevb.figures declares it (beyond the papers: the last section)
        section = [s for s, body in sections.items() if f'<figure id="{name}">' in body]
        assert section == [f"paper-{figure.paper.split(' (')[0].split(',')[0].lower().replace(' & ', '-')}"
                           if figure.paper else "beyond"], (name, section)
    for path in (out / "build" / "notebooks").glob("*.ipynb"):
        assert f'href="{path.stem}.html"' in page, path.stem
        assert (html_dir / f"{path.stem}.html").stat().st_size > 10_000
    assert "smoke" in page and "cpu" in page


def html_tables(page):
    """{h3 id: rows of cell texts} for the index's tables that follow an <h3 id=...> heading."""
    tables = {}
    for name, body in re.findall(r"<h3 id='([^']+)'>.*?</h3>\s*<table>(.*?)</table>", page, re.S):
        tables[name] = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
    return tables


def test_index_opens_with_verdicts_then_findings_then_figures(paper):
    out, _ = paper
    page = (out / "build" / "html" / "index.html").read_text()
    positions = [page.index(marker) for marker in ("id='verdicts'", "id='findings'", "id='figures'", "id='tables'",
                                                    "id='scorecard'", "id='runs'")]
    assert positions == sorted(positions)  # the opening, the papers' figures, then the appendices
    verdicts = page[positions[0]:positions[1]]
    for paper_name in ("Andriciuc (2025)", "Kingma &amp; Welling (2013)", "Burda, Grosse &amp; Salakhutdinov (2015)"):
        assert paper_name in verdicts
    # each headline finding links to its place beside its figure on this page, and that figure is there
    beside = re.findall(r"beside <a href='#(finding-[a-z0-9-]+)'>", page[positions[1]:positions[2]])
    assert beside and len(beside) == len(set(beside))
    ids = re.findall(r"id='(finding-[^']+)'", page)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})  # each finding shown once
    for anchor in beside:
        at = page.index(f"id='{anchor}'")
        assert positions[2] < at, anchor
    for name in FIGURES:  # every figure sits in the papers' part, after the opening
        assert positions[2] < page.index(f'<figure id="{name}">') < positions[3], name
    # each headline finding links to an anchor that its rendered notebook holds
    links = re.findall(r'<a href="([a-z0-9_]+)\.html#(finding-[a-z0-9-]+)"', page[positions[1]:positions[2]])
    assert links, "the index lists no headline finding"
    for notebook, anchor in links:
        assert f'id="{anchor}"' in (out / "build" / "html" / f"{notebook}.html").read_text(), (notebook, anchor)


def test_index_shows_every_table_the_notebooks_write_with_its_values(paper):
    out, _ = paper
    page = (out / "build" / "html" / "index.html").read_text()
    tables = html_tables(page)
    for name in CSV_TABLES:
        if name == "scorecard":
            continue
        with open(out / "figures" / f"{name}.csv", newline="") as f:
            expected = [[html.escape(c) for c in row] for row in csv.reader(f)]
        assert len(expected) > 1, f"{name}.csv has no rows"
        assert tables[name] == expected, name


def test_index_runs_table_shows_each_runs_log_likelihood(paper):
    out, _ = paper
    page = (out / "build" / "html" / "index.html").read_text()
    runs_table = page[page.index("id='runs'"):page.index("id='build'")]
    rows = {f'{cells[0]}/{re.sub(r"<[^>]+>", "", cells[1])}': cells for cells in
            (re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", runs_table)) if cells}
    assert len(rows) == len(grid.runs(profile="smoke"))
    estimated = 0
    for run in grid.runs(profile="smoke"):
        metrics = json.loads((run.folder(out / "runs") / "metrics.json").read_text())
        cells = rows[run.name]
        for column, key in ((8, "test_log_px_is"), (9, "test_log_px_appd")):
            assert cells[column] == (f"{metrics[key]:.2f}" if key in metrics else "–"), (run.name, key)
            estimated += key in metrics
    assert estimated >= 20  # the main Nz = 20 runs, Figure 3's and Burda's


def test_train_notebooks_draw_their_curves(paper):
    out, _ = paper
    for run in grid.runs(profile="smoke"):
        path = out / "build" / "notebooks" / f"train_{run.name.replace('/', '_')}.ipynb"
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "CURVES" in c.source)
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), path.name


def test_rendered_notebooks_hide_their_plumbing(paper):
    out, _ = paper
    text = lambda path: html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))  # the page's text, as shown
    rendered = text(out / "build" / "html" / "scorecard.html")
    assert "import seaborn" not in rendered and "scorecard.build(" in rendered  # imports hidden, the call kept
    train = text(out / "build" / "html" / f"train_{grid.runs(profile='smoke')[0].name.replace('/', '_')}.html")
    assert "RunConfig.from_namespace" not in train and "train_run(" in train


def test_results_file_has_the_verdicts_and_its_provenance(paper):
    out, _ = paper
    text = (out / "build" / "RESULTS.md").read_text()
    with open(out / "figures" / "scorecard.csv", newline="") as f:
        card = list(csv.DictReader(f))
    assert "| profile | smoke |" in text and "## Verdicts per paper" in text and "| code hash |" in text
    # the verdicts-per-paper table holds, paper by paper, the counts of scorecard.csv's verdicts
    table = text[text.index("## Verdicts per paper"):].split("\n\n")[1].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    shown = {cells[0]: dict(zip(header[1:], map(int, cells[1:])))
             for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}
    counts = {paper: {v: c.get(v, 0) for v in header[1:]} for paper, c in verdicts_by_paper(card).items()}
    assert shown == counts and sum(counts[p]["not run at this scale"] for p in counts) > 0
    assert set(header[1:]) == {r["verdict"] for r in card}


def test_a_deleted_figure_reexecutes_only_its_notebook(paper):
    out, _ = paper
    victim = out / "figures" / "burda_vae_iwae.png"
    victim.unlink()
    log = make_paper(out)
    assert victim.exists()
    assert notebooks_run(log) == ["burda2015"], log[-2000:]


def test_index_renders_in_headless_chromium(paper, chromium):
    out, _ = paper
    driver = chromium(out)
    try:
        driver.get((out / "build" / "html" / "index.html").as_uri())
        widths = driver.execute_script(  # every figure loaded and laid out on the page
            "return Array.from(document.images).map(i => i.complete && i.offsetWidth > 0 ? i.naturalWidth : 0)")
        assert len(widths) == len(FIGURES) and min(widths) > 0, widths
        blank = driver.execute_script("""
            const blank = [];  // textContent: a table folded in a closed <details> counts too
            document.querySelectorAll('table').forEach((t, n) => {
              const rows = Array.from(t.rows).slice(1);
              const width = t.rows[0].cells.length;
              for (let c = 0; c < width; c++)
                if (rows.length && rows.every(r => !r.cells[c] || ['', '–'].includes(r.cells[c].textContent.trim())))
                  blank.push(n + ': ' + t.rows[0].cells[c].textContent);
            });
            return blank;""")
        assert not blank, f"columns with no value in any row: {blank}"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        links = driver.find_elements("css selector", "ul.findings li span.where a")
        assert links, "no headline finding on the index"
        links[0].click()  # the link lands on its finding in the rendered notebook
        anchor = driver.current_url.split("#")[1]
        assert driver.find_elements("id", anchor), driver.current_url
    finally:
        driver.quit()


# ---- the figure notebooks' findings, computed from the smoke build's runs ----------------------------------

def findings_of(figures_dir, notebook):
    return json.loads((figures_dir / "findings" / f"{notebook}.json").read_text())


def test_every_figure_notebook_states_its_findings(paper):
    """Each figure notebook writes findings/<notebook>.json with its findings, every one a sentence with
    numbers of this build (no NaN, no unformatted value) and shown in its executed notebook with its anchor."""
    out, _ = paper
    for notebook in notebooks():
        found = findings_of(out / "figures", notebook)
        assert found, f"{notebook} states no finding"
        executed = (out / "build" / "notebooks" / f"{notebook}.ipynb").read_text()
        for finding in found:
            assert finding["notebook"] == notebook and len(finding["text"]) > 40, finding
            assert not re.search(r"\bnan\b|\{|\}", finding["text"], re.IGNORECASE), finding["text"]
            assert not finding["headline"] or finding["title"], finding
            assert finding["anchor"] in executed, finding["anchor"]
    headlines = [f for n in notebooks() for f in findings_of(out / "figures", n) if f["headline"]]
    assert 3 <= sum(f["notebook"] == "scorecard" for f in headlines) <= 6
    from aevb.findings import words
    long = [(f["key"], words(f["text"])) for n in notebooks() for f in findings_of(out / "figures", n)
            if words(f["text"]) > 60]  # a template's ~50 words, its filled-in lists a little longer at most
    assert not long, long
    assert all(f["figure"] in FIGURES or f["figure"] in CSV_TABLES for f in headlines), headlines


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
    assert len(trials) == len([r for r in grid.runs(profile="smoke") if r.params("smoke").get("lr_choices")]) > 20
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
    """The notebooks a make call ran, from its progress lines: each figure notebook, and "train" for any run."""
    ran = set(re.findall(r"ran notebooks/(\w+)\.ipynb in", log))
    return sorted(ran | ({"train"} if re.search(r"(?:trained|reused) \w+/\w+ in", log) else set()))


def mtimes(*folders):
    return {p: p.stat().st_mtime_ns for folder in folders for p in folder.rglob("*") if p.is_file()}


def test_a_build_writes_nothing_into_the_repository_outside_runs_figures_build_and_data(paper):
    assert set(SMOKE_PAPER_STATUS) == {"before", "after"}
    assert written_outside(SMOKE_PAPER_STATUS["before"], SMOKE_PAPER_STATUS["after"]) == []


def test_a_make_paper_with_nothing_changed_rewrites_nothing(paper):
    out, _ = paper
    before = mtimes(out / "runs", out / "figures", out / "build")
    log = make_paper(out)
    assert notebooks_run(log) == [] and "Plan: 0 run(s) to train" in log, log[-3000:]
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


def test_the_builds_figures_publish_small_with_their_size_stated(paper, tmp_path):
    """make results' --publish-figures on this build's figures, into a temporary folder (never the committed
    figures/): every figure as a PNG at most PUBLISHED_WIDTH wide, their total small and stated in
    provenance.json, RESULTS.md and the README's block, whose images resolve."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import write_results
    out, _ = paper
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{write_results.BEGIN}\n{write_results.END}\n")
    write_results.main(["--profile", "smoke", "--runs", str(out / "runs"), "--figures", str(out / "figures"),
                        "--out", str(tmp_path / "RESULTS.md"), "--readme", str(readme),
                        "--publish-figures", str(tmp_path / "figures")])
    record = json.loads((tmp_path / "figures" / "provenance.json").read_text())
    assert set(record["files"]) == {f"{name}.png" for name in FIGURES}
    assert record["total bytes"] < 3e6, record["total size"]  # a rebuild adds no more than this to the repository
    assert record["total size"] in readme.read_text() and record["total size"] in (tmp_path / "RESULTS.md").read_text()
    links = re.findall(r'<img src="([^"]+)"', readme.read_text())
    assert len(links) == len(write_results.README_FIGURES) and all((tmp_path / link).exists() for link in links)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (tmp_path / "RESULTS.md").read_text())
    assert images and all((tmp_path / link).exists() for link in images)
