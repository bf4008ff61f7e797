"""Render every executed notebook to HTML and write index.html (`make html`).

index.html is what a reviewer reads first, in this order: the verdicts per paper (from scorecard.csv),
the headline findings (the sentences the figure notebooks computed from their tables, aevb.findings,
each linked to where its notebook shows it), every figure (embedded, base64 PNG) with its caption and
the notebook that made it, every table the notebooks write (aevb.figures.CSV_TABLES), the scorecard,
the runs, and the build's profile, devices, versions and wall times. The rendered notebooks hide
their plumbing: cells tagged remove-input lose their code, cells tagged remove-cell go.
"""
import argparse
import base64
import csv
import html
import json
import os
import platform
import re
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html
from traitlets.config import Config

from aevb import findings, grid
from aevb.figures import CSV_TABLES, FIGURES, TABLES
from aevb.files import atomic_write_text
from aevb.scorecard import VERDICTS, verdicts_by_paper

TITLE = "Auto-Encoding Variational Bayes, its replication report and Burda et al.'s VAE and IWAE, reproduced"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.95em; color: #444; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } code { background: #f4f4f4; }
td.reproduced { background: #d9f2d9; } td.not-reproduced { background: #f8d7d7; }
td.not-run-at-this-scale, td.out-of-scope { background: #eeeeee; }
table.scorecard td { font-size: 0.85em; } table.scorecard td:nth-child(2) { min-width: 16em; }
th span.reproduced { color: #1a6b1a; } th span.not-reproduced { color: #9b1c1c; }
ul.findings li { margin: 0.5em 0; } span.where, p.caption { font-size: 0.9em; color: #555; }
"""


def number(text, digits=2):
    try:
        return f"{float(text):.{digits}f}"
    except ValueError:
        return text


def short(samples):
    """3000000 -> '3e6', 196800000 -> '2e8': the published sample counts, as the papers round them."""
    return f"{float(samples):.0e}".replace("e+0", "e").replace("e+", "e")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def verdicts_section(card):
    """The verdicts per paper: the first thing a reviewer reads."""
    order = [v for v in VERDICTS if any(row["verdict"] == v for row in card)]
    by_paper = verdicts_by_paper(card)
    head = ["paper", *(f'<span class="{v.replace(" ", "-")}">{html.escape(v)}</span>' for v in order)]
    rows = [[html.escape(paper), *(str(c.get(v, 0)) for v in order)] for paper, c in by_paper.items()]
    total = Counter(row["verdict"] for row in card)
    return ["<h2 id='verdicts'>Verdicts per paper</h2>",
            f"<p>{len(card)} published numbers and claims, each judged against our runs: "
            + ", ".join(f"{total[v]} {html.escape(v)}" for v in order)
            + ". <code>not run at this scale</code>: our runs trained fewer than half the samples behind the"
            " published value (the <code>paper</code> profile trains the papers' budgets). Every row is in the"
            " <a href='#scorecard'>scorecard</a> below; the rules are in"
            " <a href='scorecard.html'>notebooks/scorecard.ipynb</a>.</p>",
            table(head, rows)]


def findings_section(figures_dir, rendered):
    """The notebooks' headline findings (aevb.findings), each linked to the place in its notebook that shows it."""
    found = findings.headlines(figures_dir)
    parts = ["<h2 id='findings'>Headline findings</h2>"]
    if not found:
        return parts + ["<p>No figure notebook recorded a headline finding.</p>"]
    parts.append("<ul class='findings'>")
    for f in found:
        leads = f["text"].lstrip().startswith("**")  # a finding that opens in bold is its own title
        title = f"<b>{html.escape(f['title'])}.</b> " if f["title"] and not leads else ""
        text = markdown2html(f["text"]).strip()
        text = text[3:-4] if text.startswith("<p>") and text.endswith("</p>") and text.count("<p>") == 1 else text
        where = (f'<a href="{f["notebook"]}.html#{f["anchor"]}">{html.escape(f["notebook"])}</a>'
                 if f["notebook"] in rendered else html.escape(f["notebook"]))
        parts.append(f"<li>{title}{text} <span class='where'>({where})</span></li>")
    return parts + ["</ul>"]


def csv_table(path):
    """A CSV file of the figures folder as an HTML table, its cells escaped."""
    with open(path, newline="") as f:
        rows = [[html.escape(c) for c in row] for row in csv.reader(f)]
    return table(rows[0], rows[1:])


def tables_section(figures_dir):
    """Every CSV table the figure notebooks make (aevb.figures.CSV_TABLES) but the scorecard, in full."""
    parts = ["<h2 id='tables'>Tables</h2>"]
    for name, (caption, notebook) in CSV_TABLES.items():
        if name == "scorecard":
            continue
        path = figures_dir / f"{name}.csv"
        if not path.exists():
            sys.exit(f"{path} is missing: notebooks/{notebook}.ipynb should have made it")
        parts.append(f"<h3 id='{name}'>{html.escape(caption)}</h3>")
        parts.append(csv_table(path))
        parts.append(f"<p class='caption'><code>{name}.csv</code>, made by "
                     f"<a href='{notebook}.html'>notebooks/{notebook}.ipynb</a>.</p>")
    return parts


def scorecard_section(card):
    """Every row of the scorecard (scorecard.csv) as an HTML table."""
    body = []
    for row in card:
        ours = number(row["ours"]) if row["ours"] not in ("", "nan") else ""
        if ours and int(row["n_runs"]) > 1:
            ours += f" ± {number(row['ours_sd'])} ({row['n_runs']} runs)"
        trained = f"{int(float(row['samples_trained'])):,}" if row["samples_trained"] else "-"
        difference = number(row["difference"]) if row["difference"] not in ("", "nan") else ""
        better_by = number(row["better_by"]) if row["better_by"] not in ("", "nan") else ""
        verdict = html.escape(row["verdict"])
        cells = [f"<td>{html.escape(row['source'])}</td>", f"<td>{html.escape(row['what'])}</td>"]
        cells += [f'<td class="num">{html.escape(c)}</td>' for c in
                  (number(row["published"]) if row["published"] else "", ours, difference, better_by, row["tolerance"])]
        cells += [f"<td>{html.escape(row['protocol'])}</td>",
                  f'<td class="num">{short(row["samples_published"])} / {trained}</td>',
                  f'<td class="{verdict.replace(" ", "-")}">{verdict}</td>', f"<td>{html.escape(row['note'])}</td>"]
        body.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in ("source", "what", "published", "ours", "ours - published",
                                               "ours better by", "tolerance",
                                               "protocol", "samples: published / ours", "verdict", "note"))
    return ["<h2 id='scorecard'>Scorecard</h2>",
            f"<p>{html.escape(CSV_TABLES['scorecard'][0])}: <code>scorecard.csv</code>, made by"
            " <a href='scorecard.html'>notebooks/scorecard.ipynb</a> from <code>published_numbers.csv</code>"
            " (which names each row's runs and tolerance).</p>",
            f"<table class='scorecard'><tr>{header}</tr>{''.join(body)}</table>"]


# What a reviewer does not need to read: cells tagged so in the notebooks lose their input (the code) or
# the whole cell; the parameters cell's defaults are replaced by papermill's injected values, which stay.
REMOVE_INPUT_TAGS = {"remove-input", "parameters"}
REMOVE_CELL_TAGS = {"remove-cell"}


def exporter():
    """nbconvert's lab HTML with the plumbing removed (TagRemovePreprocessor)."""
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = REMOVE_INPUT_TAGS
    config.TagRemovePreprocessor.remove_cell_tags = REMOVE_CELL_TAGS
    return HTMLExporter(config=config, template_name="lab")


def render_notebook(path, target, script_mtime):
    """Convert one executed notebook where its HTML is missing or older than it (or than this script); return
    its papermill duration (s). One exporter per process, made on its first notebook."""
    global _EXPORTER
    nb = nbformat.read(path, as_version=4)
    if not target.exists() or target.stat().st_mtime < max(path.stat().st_mtime, script_mtime):
        if _EXPORTER is None:
            _EXPORTER = exporter()
        body, _ = _EXPORTER.from_notebook_node(nb)
        atomic_write_text(target, body)
    return nb.metadata.get("papermill", {}).get("duration")


_EXPORTER = None


def render_notebooks(notebooks_dir, html_dir):
    """Convert each executed notebook whose HTML is missing or older than it (or than this script), on every
    core at once (a notebook a process); return {stem: duration s}."""
    paths = sorted(notebooks_dir.glob("*.ipynb"))
    this = Path(__file__).stat().st_mtime
    with ProcessPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        durations = pool.map(render_notebook, paths, [html_dir / f"{p.stem}.html" for p in paths], [this] * len(paths))
        return dict(zip((p.stem for p in paths), durations))


NUMBER = re.compile(r"-?[0-9][0-9,.]*( min)?")


def table(header, rows):
    """An HTML table of cells that are already HTML; numbers are right-aligned."""
    cell = lambda c, tag: f'<{tag} class="num">{c}</{tag}>' if NUMBER.fullmatch(c) else f"<{tag}>{c}</{tag}>"
    lines = ["<tr>" + "".join(cell(c, tag) for c in row) + "</tr>" for row, tag in
             [(header, "th")] + [(r, "td") for r in rows]]
    return "<table>" + "".join(lines) + "</table>"


def main():
    parser = argparse.ArgumentParser()
    for name in ("profile", "runs", "figures", "notebooks", "html"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    runs_dir, figures_dir = Path(args.runs), Path(args.figures)
    notebooks_dir, html_dir = Path(args.notebooks), Path(args.html)
    html_dir.mkdir(parents=True, exist_ok=True)
    durations = render_notebooks(notebooks_dir, html_dir)

    runs = []  # the profile's finished runs
    for run_dir in (r.folder(runs_dir) for r in grid.runs(profile=args.profile)):
        if (run_dir / "metrics.json").exists():
            runs.append((run_dir, json.loads((run_dir / "config.json").read_text()),
                         json.loads((run_dir / "metrics.json").read_text())))
    devices = sorted({m["device"] for _, _, m in runs})
    torch_versions = sorted({m["torch_version"] for _, _, m in runs})
    training_time = sum(m["wall_time"] for _, _, m in runs)
    notebook_time = sum(d for d in durations.values() if d)
    card_path = figures_dir / "scorecard.csv"
    if not card_path.exists():
        sys.exit(f"{card_path} is missing: notebooks/scorecard.ipynb should have made it")
    card = read_csv(card_path)

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(TITLE)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(TITLE)}</h1>",
             "<p>Kingma &amp; Welling (2013), <i>Auto-Encoding Variational Bayes</i>; the replication report by"
             " Andriciuc (2025), which compared AEVB with wake-sleep on MNIST (here with the true wake-sleep"
             " algorithm of Hinton, Dayan, Frey &amp; Neal, 1995); and the VAE and IWAE numbers of Burda, Grosse"
             " &amp; Salakhutdinov (2015). Everything below was made by <code>make paper</code> from the run"
             f" folders of the <b>{html.escape(args.profile)}</b> profile: the verdicts by the scorecard, the"
             " sentences by the figure notebooks from their own tables, each linked to where it is shown.</p>",
             *verdicts_section(card),
             *findings_section(figures_dir, durations),
             "<h2 id='figures'>Figures</h2>"]
    for name, (caption, notebook) in FIGURES.items():
        png = figures_dir / f"{name}.png"
        if not png.exists():
            sys.exit(f"{png} is missing: notebooks/{notebook}.ipynb should have made it")
        data = base64.b64encode(png.read_bytes()).decode()
        made_by = f'made by <a href="{notebook}.html">notebooks/{notebook}.ipynb</a>'
        extra = csv_table(figures_dir / f"{name}.csv") if name in TABLES else ""
        parts.append(f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                     f"{extra}<figcaption><b>{name}</b>: {html.escape(caption)}; {made_by}.</figcaption></figure>")
    parts += tables_section(figures_dir)
    parts += scorecard_section(card)

    parts.append("<h2 id='runs'>Runs</h2>")
    rows = []
    for run_dir, config, metrics in runs:
        stem = f"train_{config['dataset']}_{run_dir.name}"
        link = f'<a href="{stem}.html">{html.escape(run_dir.name)}</a>' if stem in durations else html.escape(run_dir.name)
        value = lambda key: f"{metrics[key]:.2f}" if key in metrics else "–"  # MCEM has no ELBO
        lr = metrics.get("lr", config["lr"])  # a step size chosen by the run is in its metrics
        rows.append([html.escape(config["dataset"]), link, html.escape(config["protocol"]), f"{config['latent_dim']}",
                     html.escape(f"{config['optimizer']} {lr:g}" if lr is not None else config["optimizer"]),
                     f"{metrics['samples']:,}", value("train_elbo"), value("test_elbo"), value("test_log_px_is"),
                     value("test_log_px_appd"), f"{metrics['wall_time']:.0f}", html.escape(metrics["device"])])
    parts.append(table(["dataset", "run (executed notebook)", "protocol", "Nz", "optimizer, step", "training samples",
                        "train ELBO", "test ELBO", "test log p(x), IS", "test log p(x), App. D", "wall time (s)",
                        "device"], rows))
    parts.append("<p class='caption'>–: not estimated for this run (MCEM has no encoder, so no ELBO; log p(x) is"
                 " estimated where the grid asks for it). The log p(x) columns are on the run's first test points"
                 " (its <code>config.json</code>: <code>is_points</code>, <code>appd_points</code> or"
                 " <code>log_px_points</code>).</p>")
    parts += ["<h2 id='build'>This build</h2>",
              table(["", ""], [
                  ["profile", html.escape(args.profile)],
                  ["device(s)", html.escape(", ".join(devices) or "none")],
                  ["PyTorch", html.escape(", ".join(torch_versions) or "none")],
                  ["Python, platform", html.escape(f"{platform.python_version()}, {platform.platform()}")],
                  ["runs", f"{len(runs)}"],
                  ["training wall time (sum over runs)", f"{training_time / 60:.1f} min"],
                  ["notebook execution time (sum)", f"{notebook_time / 60:.1f} min"],
                  ["built", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")]])]
    parts.append("<h2 id='notebooks'>Notebooks</h2><ul>")
    for stem, duration in durations.items():
        seconds = f" ({duration:.0f} s)" if duration else ""
        parts.append(f'<li><a href="{stem}.html">{html.escape(stem)}.ipynb</a>{seconds}</li>')
    parts.append("</ul></body></html>\n")
    atomic_write_text(html_dir / "index.html", "\n".join(parts))
    print(f"wrote {html_dir / 'index.html'} ({len(FIGURES)} figures, {len(durations)} notebooks)")


if __name__ == "__main__":
    main()
