"""Render every executed notebook to HTML and write index.html (`make html`).

index.html is what a reviewer reads first, and reads as a paper: a short opening on what was
reproduced and what was not (the verdicts per paper from scorecard.csv, and the headline findings,
each a sentence or two, aevb.findings); then per paper its figures (embedded, base64 PNG), each with
the findings that cite it and the published values beside ours with their verdicts; the figures
beyond the papers; and as appendices the tables the notebooks write (aevb.figures.CSV_TABLES), the
scorecard's full table, the runs, and the build's profile, devices, versions and wall times. Every
finding links to where its notebook shows it. The rendered notebooks hide their plumbing: cells
tagged remove-input lose their code, cells tagged remove-cell go.
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
from aevb.figures import CSV_TABLES, FIGURES, PAPERS as PAPER_TITLES, TABLES, notebooks
from aevb.files import atomic_write_text
from aevb.findings import count
from aevb.scorecard import VERDICTS, ours_cell, published_numbers, verdict_css, verdicts_by_paper

TITLE = ("Auto-Encoding Variational Bayes, its replication report and Burda et al.'s VAE and IWAE, "
         "reproduced")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.95em; color: #444; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } code { background: #f4f4f4; }
table.scorecard td { font-size: 0.85em; } table.scorecard td:nth-child(2) { min-width: 16em; }
th span.reproduced { color: #1a6b1a; } th span.not-reproduced { color: #9b1c1c; }
ul.findings li { margin: 0.5em 0; } span.where, p.caption { font-size: 0.9em; color: #555; }
p.finding { background: #f7f7fb; border-left: 3px solid #99a; padding: 0.4em 0.8em;
            margin: 0.6em 0; }
details { margin: 0.5em 0 1.5em; } summary { cursor: pointer; color: #335; }
section.paper { border-top: 2px solid #ccc; margin-top: 2.5em; }
""" + verdict_css("td.{verdict}, span.{verdict}")
# Each paper's figures, in their order, and the scorecard rows (by source) set beside each figure:
# the published values it reproduces, ours and the verdicts, as aevb.figures.FIGURES declares them.
# A figure of no paper is "beyond the papers".
PAPERS = {paper: {name: list(f.judges) for name, f in FIGURES.items() if f.paper == paper}
          for paper in PAPER_TITLES}


def number(text, digits=2):
    try:
        return f"{float(text):.{digits}f}"
    except ValueError:
        return text


def short(samples):
    """3000000 -> '3e6', 196800000 -> '2e8': the published sample counts, as the papers round
    them."""
    return f"{float(samples):.0e}".replace("e+0", "e").replace("e+", "e")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def verdicts_section(card):
    """The opening: what was reproduced and what was not, per paper, and the claims' verdicts."""
    order = [v for v in VERDICTS if any(row["verdict"] == v for row in card)]
    by_paper = verdicts_by_paper(card)
    head = [
        "paper", *(f'<span class="{v.replace(" ", "-")}">{html.escape(v)}</span>' for v in order)
    ]
    rows = [[
        f"<a href='#{paper_id(paper)}'>{html.escape(paper)}</a>", *(str(c.get(v, 0)) for v in order)
    ] for paper, c in by_paper.items()]
    total = Counter(row["verdict"] for row in card)
    metric = {i: row["metric"] for i, row in published_numbers().items()}
    claims = [row for row in card if metric.get(row["id"], "").startswith("claim:")]
    claim_items = "".join(
        f"<li>{html.escape(row['source'])}: {html.escape(row['what'].split(':')[0])} "
        f"<span class='{row['verdict'].replace(' ', '-')}'>{html.escape(row['verdict'])}"
        "</span></li>"
        for row in claims)
    return [
        "<h2 id='verdicts'>What was reproduced, and what was not</h2>",
        f"<p>{len(card)} published numbers and claims, each judged against our runs: "
        + ", ".join(f"{total[v]} {html.escape(v)}" for v in order) +
        ". <code>not run at this scale</code>: our runs trained fewer than half the samples behind "
        "the"
        " published value (the <code>paper</code> profile trains the papers' budgets). Each "
        "paper's section"
        " below sets its figures beside the published values; every row is in the"
        " <a href='#scorecard'>scorecard</a> (appendix B), the rules in"
        " <a href='scorecard.html'>notebooks/scorecard.ipynb</a>.</p>",
        table(head, rows), f"<p>The papers' claims:</p><ul class='claims'>{claim_items}</ul>"
    ]


def paper_id(paper):
    return "paper-" + re.sub(r"[^a-z0-9]+", "-",
                             paper.split(",")[0].split(" (")[0].lower()).strip("-")


def finding_html(f):
    """A finding's text as inline HTML (its Markdown converted)."""
    text = markdown2html(f["text"]).strip()
    return text[3:-4] if text.startswith("<p>") and text.endswith("</p>") and text.count(
        "<p>") == 1 else text


def where(f, rendered):
    """The link to the place in its rendered notebook that shows a finding."""
    return (f'<a href="{f["notebook"]}.html#{f["anchor"]}">{html.escape(f["notebook"])}</a>'
            if f["notebook"] in rendered else html.escape(f["notebook"]))


def findings_section(figures_dir, rendered):
    """The headline findings (aevb.findings), each a sentence or two: a link to it beside its figure
    below and to the place in its notebook that shows it."""
    found = findings.headlines(figures_dir)
    parts = ["<h2 id='findings'>Headline findings</h2>"]
    if not found:
        return parts + ["<p>No figure notebook recorded a headline finding.</p>"]
    parts.append("<ul class='findings'>")
    for f in found:
        leads = f["text"].lstrip().startswith("**")  # a finding that opens in bold is its own title
        title = f"<b>{html.escape(f['title'])}.</b> " if f["title"] and not leads else ""
        figure = f.get("figure") or ""
        shown = (f"beside <a href='#{f['anchor']}'>{html.escape(figure)}</a>, "
                 if figure in FIGURES or figure in CSV_TABLES else "")
        parts.append(
            f"<li>{title}{finding_html(f)} <span "
            f"class='where'>({shown}{where(f, rendered)})</span></li>"
        )
    return parts + ["</ul>"]


def cited(found, name, rendered):
    """The findings that cite figure or table `name`, as paragraphs with their anchors (the headline
    list links here)."""
    return [
        f"<p class='finding' id='{f['anchor']}'>{finding_html(f)} <span "
        f"class='where'>({where(f, rendered)})"
        "</span></p>" for f in found if f.get("figure") == name
    ]


def beside(card, sources):
    """The scorecard rows of these sources, published beside ours with the verdict, folded
    (<details>)."""
    rows = [row for row in card if any(row["source"] == s for s in sources)]
    if not rows:
        return ""
    counts = Counter(row["verdict"] for row in rows)
    body = [[
        html.escape(row["what"]),
        number(row["published"]) if row["published"] else "",
        ours_cell(row),
        f"<span class='{row['verdict'].replace(' ', '-')}'>{html.escape(row['verdict'])}</span>"
    ] for row in rows]
    summary = ", ".join(f"{n} {html.escape(v)}" for v, n in counts.items())
    header = ["what", "published", "ours", "verdict"]
    # a claim has no published value
    kept = [c for c in range(len(header)) if any(row[c] for row in body)]
    return (
        f"<details><summary>Published values beside ours: {count(len(rows), 'row')} "
        f"({summary})</summary>"
        + table([header[c] for c in kept], [[row[c] for c in kept] for row in body]) + "</details>")


def figure_html(figures_dir, name):
    caption, notebook = FIGURES[name][:2]
    png = figures_dir / f"{name}.png"
    if not png.exists():
        sys.exit(f"{png} is missing: notebooks/{notebook}.ipynb should have made it")
    data = base64.b64encode(png.read_bytes()).decode()
    made_by = f'made by <a href="{notebook}.html">notebooks/{notebook}.ipynb</a>'
    extra = csv_table(figures_dir / f"{name}.csv") if name in TABLES else ""
    return (
        f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"{extra}<figcaption><b>{name}</b>: {html.escape(caption)}; "
        f"{made_by}.</figcaption></figure>"
    )


def papers_section(figures_dir, card, rendered):
    """Per paper: its verdicts, then each figure with the findings that cite it and the published
    values beside ours; then the figures beyond the papers."""
    # the verdicts first
    found = findings.load(figures_dir, list(dict.fromkeys(["scorecard", *notebooks()])))
    by_paper = verdicts_by_paper(card)
    parts = ["<div id='figures'>"]
    for paper, figures in PAPERS.items():
        counts = by_paper.get(paper, Counter())
        parts += [
            f"<section class='paper' id='{paper_id(paper)}'>"
            f"<h2>{html.escape(PAPER_TITLES[paper])}</h2>",
            "<p>Verdicts: " + ", ".join(f"{n} {html.escape(v)}"
                                        for v in VERDICTS if (n := counts.get(v))) + ".</p>"
        ]
        for name, sources in figures.items():
            parts += [
                figure_html(figures_dir, name), *cited(found, name, rendered),
                beside(card, sources)
            ]
        parts.append("</section>")
    others = [name for name in FIGURES if not any(name in figures for figures in PAPERS.values())]
    parts.append("<section class='paper' id='beyond'><h2>Beyond the papers</h2>")
    for name in others:
        parts += [figure_html(figures_dir, name), *cited(found, name, rendered)]
    return parts + ["</section></div>"]


def csv_table(path):
    """A CSV file of the figures folder as an HTML table, its cells escaped."""
    with open(path, newline="") as f:
        rows = [[html.escape(c) for c in row] for row in csv.reader(f)]
    return table(rows[0], rows[1:])


def tables_section(figures_dir, rendered=()):
    """Every CSV table the figure notebooks make (aevb.figures.CSV_TABLES) but the scorecard, in
    full, each followed by the findings that cite it."""
    found = findings.load(figures_dir)
    parts = ["<h2 id='tables'>Appendix A: tables</h2>"]
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
        # (a table that is also a figure has its findings beside the figure)
        if name not in FIGURES:
            parts += cited(found, name, rendered)
    return parts


def scorecard_section(card):
    """Every row of the scorecard (scorecard.csv) as an HTML table."""
    body = []
    for row in card:
        ours = ours_cell(row)
        trained = f"{int(float(row['samples_trained'])):,}" if row["samples_trained"] else "-"
        difference = number(row["difference"]) if row["difference"] not in ("", "nan") else ""
        better_by = number(row["better_by"]) if row["better_by"] not in ("", "nan") else ""
        verdict = html.escape(row["verdict"])
        cells = [f"<td>{html.escape(row['source'])}</td>", f"<td>{html.escape(row['what'])}</td>"]
        cells += [
            f'<td class="num">{html.escape(c)}</td>'
            for c in (number(row["published"]) if row["published"] else "", ours, difference,
                      better_by, row["tolerance"])
        ]
        cells += [
            f"<td>{html.escape(row['protocol'])}</td>",
            f'<td class="num">{short(row["samples_published"])} / {trained}</td>',
            f'<td class="{verdict.replace(" ", "-")}">{verdict}</td>',
            f"<td>{html.escape(row['note'])}</td>"
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{h}</th>"
                     for h in ("source", "what", "published", "ours", "ours - published",
                               "ours better by", "tolerance", "protocol",
                               "samples: published / ours", "verdict", "note"))
    return [
        "<h2 id='scorecard'>Appendix B: the scorecard</h2>",
        f"<p>{html.escape(CSV_TABLES['scorecard'][0])}: <code>scorecard.csv</code>, made by"
        " <a href='scorecard.html'>notebooks/scorecard.ipynb</a> from "
        "<code>published_numbers.csv</code>"
        " (which names each row's runs and tolerance).</p>",
        f"<table class='scorecard'><tr>{header}</tr>{''.join(body)}</table>"
    ]


# What a reviewer does not need to read: cells tagged so in the notebooks lose their input (the
# code) or the whole cell; the parameters cell's defaults are replaced by papermill's injected
# values, which stay.
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
    """Convert one executed notebook where its HTML is missing or older than it (or than this
    script); return its papermill duration (s). One exporter per process, made on its first
    notebook."""
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
    """Convert each executed notebook whose HTML is missing or older than it (or than this script),
    on every core at once (a notebook a process); return {stem: duration s}."""
    paths = sorted(notebooks_dir.glob("*.ipynb"))
    this = Path(__file__).stat().st_mtime
    with ProcessPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        durations = pool.map(render_notebook, paths, [html_dir / f"{p.stem}.html" for p in paths],
                             [this] * len(paths))
        return dict(zip((p.stem for p in paths), durations))


NUMBER = re.compile(r"-?[0-9][0-9,.]*( min)?")


def table(header, rows):
    """An HTML table of cells that are already HTML; numbers are right-aligned."""
    cell = lambda c, tag: f'<{tag} class="num">{c}</{tag}>' if NUMBER.fullmatch(
        c) else f"<{tag}>{c}</{tag}>"
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

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta "
        f"charset='utf-8'><title>{html.escape(TITLE)}</title>"
        f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(TITLE)}</h1>",
        "<p>Kingma &amp; Welling (2013), <i>Auto-Encoding Variational Bayes</i>; the replication "
        "report by"
        " Andriciuc (2025), which compared AEVB with wake-sleep on MNIST (here with the true "
        "wake-sleep"
        " algorithm of Hinton, Dayan, Frey &amp; Neal, 1995); and the VAE and IWAE numbers of "
        "Burda, Grosse"
        " &amp; Salakhutdinov (2015). Everything below was made by <code>make paper</code> from "
        "the run"
        f" folders of the <b>{html.escape(args.profile)}</b> profile: the verdicts by the scorecard"
        " (<code>aevb/scorecard.py</code>); each finding a sentence written once, its numbers "
        "filled in from the"
        " runs by the notebook that shows it, beside its figure.</p>", *verdicts_section(card),
        *findings_section(figures_dir, durations), *papers_section(figures_dir, card, durations)
    ]
    parts += tables_section(figures_dir, durations)
    parts += scorecard_section(card)

    parts.append("<h2 id='runs'>Appendix C: the runs</h2>")
    rows = []
    for run_dir, config, metrics in runs:
        stem = f"train_{config['dataset']}_{run_dir.name}"
        link = html.escape(run_dir.name)
        if stem in durations:
            link = f'<a href="{stem}.html">{link}</a>'
        value = lambda key: f"{metrics[key]:.2f}" if key in metrics else "–"  # MCEM has no ELBO
        lr = metrics.get("lr")  # the step it trained with (chosen by the rule or given)
        rows.append([
            html.escape(config["dataset"]), link,
            html.escape(config["protocol"]), f"{config['latent_dim']}",
            html.escape(f"{config['optimizer']} {lr:g}" if lr is not None else config["optimizer"]),
            f"{metrics['samples']:,}",
            value("train_elbo"),
            value("test_elbo"),
            value("test_log_px_is"),
            value("test_log_px_appd"), f"{metrics['wall_time']:.0f}",
            html.escape(metrics["device"])
        ])
    parts.append(
        table([
            "dataset", "run (executed notebook)", "protocol", "Nz", "optimizer, step",
            "training samples", "train ELBO", "test ELBO", "test log p(x), IS",
            "test log p(x), App. D", "wall time (s)", "device"
        ], rows))
    parts.append(
        "<p class='caption'>–: not estimated for this run (MCEM has no encoder, so no ELBO; log "
        "p(x) is"
        " estimated where the grid asks for it). The log p(x) columns are on the run's first test "
        "points"
        " (its <code>config.json</code>: <code>is_points</code>, <code>appd_points</code> or"
        " <code>log_px_points</code>).</p>")
    parts += [
        "<h2 id='build'>This build</h2>",
        table(["", ""],
              [["profile", html.escape(args.profile)],
               ["device(s)", html.escape(", ".join(devices) or "none")],
               ["PyTorch", html.escape(", ".join(torch_versions) or "none")],
               [
                   "Python, platform",
                   html.escape(f"{platform.python_version()}, {platform.platform()}")
               ], ["runs", f"{len(runs)}"],
               ["training wall time (sum over runs)", f"{training_time / 60:.1f} min"],
               ["notebook execution time (sum)", f"{notebook_time / 60:.1f} min"],
               ["built", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")]])
    ]
    parts.append("<h2 id='notebooks'>Notebooks</h2><ul>")
    for stem, duration in durations.items():
        seconds = f" ({duration:.0f} s)" if duration else ""
        parts.append(f'<li><a href="{stem}.html">{html.escape(stem)}.ipynb</a>{seconds}</li>')
    parts.append("</ul></body></html>\n")
    atomic_write_text(html_dir / "index.html", "\n".join(parts))
    print(f"wrote {html_dir / 'index.html'} ({len(FIGURES)} figures, {len(durations)} notebooks)")


if __name__ == "__main__":
    main()
