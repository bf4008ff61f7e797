"""Render every executed notebook to HTML and write index.html (`make html`).

index.html is self-contained: each figure is embedded (base64 PNG) with a caption saying what it
reproduces and which notebook made it; it links every rendered notebook and states the profile,
device, versions and wall times.
"""
import argparse
import base64
import csv
import html
import json
import platform
import re
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from aevb import grid
from aevb.figures import CSV_TABLES, FIGURES, TABLES
from aevb.files import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.95em; color: #444; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } code { background: #f4f4f4; }
td.reproduced { background: #d9f2d9; } td.not-reproduced { background: #f8d7d7; }
td.not-run-at-this-scale, td.out-of-scope { background: #eeeeee; }
table.scorecard td { font-size: 0.85em; } table.scorecard td:nth-child(2) { min-width: 16em; }
"""


def number(text, digits=2):
    try:
        return f"{float(text):.{digits}f}"
    except ValueError:
        return text


def short(samples):
    """3000000 -> '3e6', 196800000 -> '2e8': the published sample counts, as the papers round them."""
    return f"{float(samples):.0e}".replace("e+0", "e").replace("e+", "e")


def scorecard_section(figures_dir):
    """The scorecard (scorecard.csv) and the test log-likelihoods as HTML tables."""
    path = figures_dir / "scorecard.csv"
    if not path.exists():
        sys.exit(f"{path} is missing: notebooks/scorecard.ipynb should have made it")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    counts = Counter(row["verdict"] for row in rows)
    body = []
    for row in rows:
        ours = number(row["ours"]) if row["ours"] not in ("", "nan") else ""
        if ours and int(row["n_runs"]) > 1:
            ours += f" ± {number(row['ours_sd'])} ({row['n_runs']} runs)"
        trained = f"{int(float(row['samples_trained'])):,}" if row["samples_trained"] else "-"
        difference = number(row["difference"]) if row["difference"] not in ("", "nan") else ""
        verdict = html.escape(row["verdict"])
        cells = [f"<td>{html.escape(row['source'])}</td>", f"<td>{html.escape(row['what'])}</td>"]
        cells += [f'<td class="num">{html.escape(c)}</td>' for c in
                  (number(row["published"]) if row["published"] else "", ours, difference, row["tolerance"])]
        cells += [f"<td>{html.escape(row['protocol'])}</td>",
                  f'<td class="num">{short(row["samples_published"])} / {trained}</td>',
                  f'<td class="{verdict.replace(" ", "-")}">{verdict}</td>', f"<td>{html.escape(row['note'])}</td>"]
        body.append("<tr>" + "".join(cells) + "</tr>")
    by_source = {}  # source -> Counter of its verdicts, in the order of the rows
    for row in rows:
        by_source.setdefault(row["source"], Counter())[row["verdict"]] += 1
    summary = table(["source", *map(html.escape, counts)],
                    [[html.escape(source), *(str(c.get(v, "")) for v in counts)] for source, c in by_source.items()])
    header = "".join(f"<th>{h}</th>" for h in ("source", "what", "published", "ours", "ours - published", "tolerance",
                                               "protocol", "samples: published / ours", "verdict", "note"))
    parts = ["<h2 id='scorecard'>Scorecard</h2>",
             f"<p>{len(rows)} published numbers and claims: "
             + ", ".join(f"{n} {html.escape(v)}" for v, n in counts.items())
             + ". Made by <a href='scorecard.html'>notebooks/scorecard.ipynb</a> from <code>published_numbers.csv</code>"
             " (which names each row's runs) into <code>scorecard.csv</code> in the figures folder; the notebook states"
             " the verdict rules and tolerances.</p>",
             summary, "<p></p>",
             f"<table class='scorecard'><tr>{header}</tr>{''.join(body)}</table>"]
    path = figures_dir / "test_log_likelihood.csv"
    if path.exists():
        with open(path, newline="") as f:
            ll = list(csv.DictReader(f))
        parts.append(f"<h3>{html.escape(CSV_TABLES['test_log_likelihood'][0])}</h3>")
        parts.append(table(["run", "protocol", "Nz", "training samples", "test points", "k", "test log p(x)",
                            "test ELBO", "log p(x) - ELBO"],
                           [[html.escape(r["run"]), html.escape(r["protocol"]), r["Nz"], f"{int(float(r['samples'])):,}",
                             r["points"], r["k"], f"{number(r['test_log_px_is'])} ± {number(r['test_log_px_is_se'])}",
                             number(r["test_elbo"]), number(r["gap"])] for r in ll]))
    return parts


def render_notebooks(notebooks_dir, html_dir):
    """Convert each executed notebook whose HTML is missing or older; return {stem: duration s}."""
    exporter = HTMLExporter(template_name="lab")
    durations = {}
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        target = html_dir / f"{path.stem}.html"
        nb = nbformat.read(path, as_version=4)
        durations[path.stem] = nb.metadata.get("papermill", {}).get("duration")
        if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
            body, _ = exporter.from_notebook_node(nb)
            atomic_write_text(target, body)
    return durations


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

    runs = []  # the grid's finished runs
    for run_dir in (r.folder(runs_dir) for r in grid.runs()):
        if (run_dir / "metrics.json").exists():
            runs.append((run_dir, json.loads((run_dir / "config.json").read_text()),
                         json.loads((run_dir / "metrics.json").read_text())))
    devices = sorted({m["device"] for _, _, m in runs})
    torch_versions = sorted({m["torch_version"] for _, _, m in runs})
    training_time = sum(m["wall_time"] for _, _, m in runs)
    notebook_time = sum(d for d in durations.values() if d)

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>AEVB reproduction</title>"
             f"<style>{STYLE}</style></head><body>",
             "<h1>Auto-Encoding Variational Bayes, reproduced</h1>",
             "<p>Kingma &amp; Welling (2013) and the replication report by Andriciuc (2025), with a true "
             "wake-sleep baseline. Every figure below was made by <code>make paper</code> from the run "
             "folders; each caption names the notebook that made it.</p>",
             table(["", ""], [
                 ["profile", html.escape(args.profile)],
                 ["device(s)", html.escape(", ".join(devices) or "none")],
                 ["PyTorch", html.escape(", ".join(torch_versions) or "none")],
                 ["Python, platform", html.escape(f"{platform.python_version()}, {platform.platform()}")],
                 ["runs", f"{len(runs)}"],
                 ["training wall time (sum over runs)", f"{training_time / 60:.1f} min"],
                 ["notebook execution time (sum)", f"{notebook_time / 60:.1f} min"],
                 ["built", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")]]),
             *scorecard_section(figures_dir),
             "<h2>Figures</h2>"]
    for name, (caption, notebook) in FIGURES.items():
        png = figures_dir / f"{name}.png"
        if not png.exists():
            sys.exit(f"{png} is missing: notebooks/{notebook}.ipynb should have made it")
        data = base64.b64encode(png.read_bytes()).decode()
        made_by = f'made by <a href="{notebook}.html">notebooks/{notebook}.ipynb</a>'
        extra = ""
        if name in TABLES:
            with open(figures_dir / f"{name}.csv", newline="") as f:
                rows = list(csv.reader(f))
            escaped = [[html.escape(c) for c in row] for row in rows]
            extra = table(escaped[0], escaped[1:])
        parts.append(f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                     f"{extra}<figcaption><b>{name}</b>: {html.escape(caption)}; {made_by}.</figcaption></figure>")

    parts.append("<h2>Runs</h2>")
    rows = []
    for run_dir, config, metrics in runs:
        stem = f"train_{config['dataset']}_{run_dir.name}"
        link = f'<a href="{stem}.html">{html.escape(run_dir.name)}</a>' if stem in durations else html.escape(run_dir.name)
        value = lambda key: f"{metrics[key]:.2f}" if key in metrics else ""  # MCEM has no ELBO
        lr = metrics.get("lr", config["lr"])  # a step size chosen by the run is in its metrics
        rows.append([html.escape(config["dataset"]), link, html.escape(config["protocol"]), f"{config['latent_dim']}",
                     html.escape(f"{config['optimizer']} {lr:g}" if lr is not None else config["optimizer"]),
                     f"{metrics['samples']:,}", value("train_elbo"), value("test_elbo"), value("test_log_px_is"),
                     f"{metrics['wall_time']:.0f}", html.escape(metrics["device"])])
    parts.append(table(["dataset", "run (executed notebook)", "protocol", "Nz", "optimizer, step", "training samples",
                        "train ELBO", "test ELBO", "test log p(x)", "wall time (s)", "device"], rows))
    parts.append("<h2>Notebooks</h2><ul>")
    for stem, duration in durations.items():
        seconds = f" ({duration:.0f} s)" if duration else ""
        parts.append(f'<li><a href="{stem}.html">{html.escape(stem)}.ipynb</a>{seconds}</li>')
    parts.append("</ul></body></html>\n")
    atomic_write_text(html_dir / "index.html", "\n".join(parts))
    print(f"wrote {html_dir / 'index.html'} ({len(FIGURES)} figures, {len(durations)} notebooks)")


if __name__ == "__main__":
    main()
