"""Write the results summary (`make results`): the scorecard's verdicts per paper and the headline
findings of the figure notebooks, each beside its figure, as Markdown, with the provenance of the
build.

`write_results.py --profile P --runs DIR --figures DIR --out RESULTS.md [--readme README.md]
[--publish-figures figures]`

Everything here is read from the build: the verdicts from scorecard.csv, the sentences from the
notebooks' findings files (aevb.findings), the devices, torch versions, code hashes and training
time from the run folders. With --publish-figures DIR, every figure (aevb.figures.FIGURES) is also
written into DIR as a small PNG (an adaptive palette of PUBLISHED_COLOURS colours, at most
PUBLISHED_WIDTH pixels wide) with DIR/provenance.json (the build's provenance, each file's SHA-256
and the total size): the default profile's go into the committed top-level figures/, so a reviewer
on a code host sees them. With --readme, the block between README.md's RESULTS markers is rewritten
too: the verdicts and, where the published figures exist and match their provenance, the figures
that carry the papers' main claims.
"""
import argparse
import csv
import hashlib
import html
import io
import json
import math
import os
import platform
import re
import time
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from aevb import findings, grid, paths
from aevb.figures import FIGURES
from aevb.runs import code_hash
from aevb.files import atomic_write, atomic_write_text
from aevb.scorecard import (NEAR_EDGE, VERDICTS, near_edge, number_or_nan, ours_cell,
                            verdicts_by_paper)

BEGIN = "<!-- RESULTS:BEGIN (written by make results from scorecard.csv; do not edit) -->"
END = "<!-- RESULTS:END -->"


MAKE_CALL = "the make call that trained its runs"
# pixels: a published figure wider than this is scaled down (legible on a code host's page)
PUBLISHED_WIDTH = 1000
# the finding that answers the project's question (notebooks/scorecard.ipynb): first in RESULTS.md
# and in README.md's results block
ANSWER = "answer"
# an adaptive palette: line plots and grey image grids stay legible at a fifth less size than 256
PUBLISHED_COLOURS = 64
PROVENANCE = "provenance.json"
# The figures that carry the papers' main claims, shown in README.md's results block (with their
# width there): the answer (AEVB minus wake-sleep per Nz and protocol), Kingma & Welling's Figure 2
# with their values beside ours, the scorecard's ours-against-theirs, and the replication report's
# samples of AEVB and of the true wake-sleep.
README_FIGURES = {
    "aevb_minus_wake_sleep": ("100%", "the answer, AEVB minus wake-sleep per Nz and protocol"),
    "kingma_fig2_lower_bound": ("100%", "Kingma & Welling's Figure 2, their bounds beside ours"),
    "scorecard_differences": ("80%", "every published value against ours, in tolerances"),
    "report_fig1_aevb_samples": ("45%", "samples of AEVB"),
    "report_fig2_wake_sleep_samples": ("45%",
                                       "and of the true wake-sleep (the report's Figures 1 and 2)")
}


def previous_value(path, key):
    """A row's value in an earlier RESULTS.md's provenance table, or None."""
    path = Path(path)
    for line in (path.read_text().splitlines() if path.exists() else []):
        if line.startswith(f"| {key} | "):
            return line[len(f"| {key} | "):].rstrip(" |")
    return None


EARLIER = "an earlier commit's code"  # what trained runs whose code hash is not this commit's


def provenance(profile, runs_dir, make_started=None, jobs=None, previous=None):
    """What made this build: profile, commit, code hashes, devices, torch versions, training time,
    date; with make_started (the epoch seconds at which `make` started), how long that make call
    took to here and how many runs it trained; where it trained none (a figure-only rebuild), what
    the `previous` RESULTS.md said of the call that did."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=paths.ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    configs, metrics, trained_now = [], [], 0
    for run in grid.runs(profile=profile):
        folder = run.folder(runs_dir)
        if (folder / "metrics.json").exists():
            configs.append(json.loads((folder / "config.json").read_text()))
            metrics.append(json.loads((folder / "metrics.json").read_text()))
            trained_now += bool(make_started) and (folder
                                                   / "model.pt").stat().st_mtime >= make_started
    if trained_now:
        call = (
            f"{(time.time() - make_started) / 60:.0f} min with make -j{jobs} on {os.cpu_count()} "
            "cores, from its "
            f"start to these results; it trained {trained_now} of the {len(metrics)} runs")
    else:
        call = previous_value(previous, MAKE_CALL) if previous else None
    join = lambda values: ", ".join(sorted(set(values))) or "none"
    hashes = join(c.get("code_hash", "") for c in configs)
    if configs and hashes != code_hash():  # results rewritten after the code changed: say so
        hashes += f" ({EARLIER}: this commit's hashes {code_hash()})"
    return {
        "profile": profile, "commit": commit, "code hash": hashes, "runs": str(len(metrics)),
        "device": join(m["device"] for m in metrics), "torch": join(m["torch_version"]
                                                                    for m in metrics),
        "training time (sum over runs)": f"{sum(m['wall_time'] for m in metrics) / 60:.0f} min",
        "longest run": f"{max((m['wall_time'] for m in metrics), default=0) / 60:.0f} min", **({
            MAKE_CALL: call
        } if call else {}), "machine": f"{platform.machine()}, {platform.system()}, Python "
                                       f"{platform.python_version()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    }


def small_png(path):
    """The PNG at `path` as small PNG bytes: at most PUBLISHED_WIDTH pixels wide, an adaptive
    palette of PUBLISHED_COLOURS colours (the figures are line plots and grey images: the palette
    keeps them legible), optimized."""
    from PIL import Image
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > PUBLISHED_WIDTH:
            image = image.resize(
                (PUBLISHED_WIDTH, round(image.height * PUBLISHED_WIDTH / image.width)),
                Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(colors=PUBLISHED_COLOURS,
                       method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def publish_figures(figures_dir, out_dir, prov):
    """Write every figure of FIGURES from figures_dir into out_dir as a small PNG, and
    out_dir/provenance.json: the build's provenance, each file's SHA-256 and size, and the total. A
    PNG in out_dir that FIGURES no longer names is removed (profiles' subfolders are never touched).
    Returns the provenance written."""
    missing = [name for name in FIGURES if not (figures_dir / f"{name}.png").exists()]
    if missing:
        sys.exit(
            f"{figures_dir} lacks {', '.join(f'{m}.png' for m in missing)}: make figures should "
            "have made them"
        )
    files = {}
    for name in FIGURES:
        data = small_png(figures_dir / f"{name}.png")
        target = out_dir / f"{name}.png"
        if not target.exists() or target.read_bytes() != data:
            atomic_write(target, lambda f, data=data: f.write(data))
        files[target.name] = {"sha256": sha256(data), "bytes": len(data)}
    for stale in out_dir.glob("*.png"):
        if stale.name not in files:
            stale.unlink()
    total = sum(f["bytes"] for f in files.values())
    record = {"profile": prov["profile"], "commit": prov["commit"], "code hash": prov["code hash"],
              "device": prov["device"], "machine": prov["machine"], "date": prov["date"],
              "total size": f"{total / 1e6:.2f} MB in {len(files)} PNG files", "total bytes": total,
              "max width (pixels)": PUBLISHED_WIDTH, "files": files}
    atomic_write_text(out_dir / PROVENANCE, json.dumps(record, indent=1) + "\n")
    print(
        f"wrote {len(files)} figures into {out_dir} ({total / 1e6:.2f} MB) and "
        f"{out_dir / PROVENANCE}"
    )
    return record


def published_figures(out_dir):
    """The provenance of the figures published in out_dir (provenance.json), or None where it is
    missing or any figure it lists is missing or differs from its SHA-256 there: a page then shows
    no image of them."""
    path = Path(out_dir) / PROVENANCE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    for name, meta in record.get("files", {}).items():
        file = Path(out_dir) / name
        if not file.exists() or sha256(file.read_bytes()) != meta["sha256"]:
            return None
    return record if set(record.get("files", {})) >= {f"{n}.png" for n in README_FIGURES} else None


def verdict_table(by_paper):
    present = [v for v in VERDICTS if any(c.get(v) for c in by_paper.values())]
    lines = ["| paper | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
    for paper, counts in by_paper.items():
        lines.append(f"| {paper} | " + " | ".join(str(counts.get(v, 0)) for v in present) + " |")
    return lines


def summary_block(by_paper, prov, results_name, figures_link=None, figures_record=None,
                  answer=None):
    """README.md's results block: the answer (the scorecard's finding `answer`, where given), the
    verdicts, what the build cost, and, with `figures_link` (the published figures' folder,
    relative to the README) and their provenance, the figures of README_FIGURES."""
    total = Counter()
    for counts in by_paper.values():
        total.update(counts)
    counts = ", ".join(f"{total[v]} {v}" for v in VERDICTS if total[v])
    took = prov.get(MAKE_CALL)
    cost = (
        f"Its {prov['runs']} runs trained for {prov['training time (sum over runs)']} in all (the "
        "longest "
        f"{prov['longest run']})" +
        (f"; the make call that trained them took {took}." if took else "."))
    images = []
    if figures_link is not None and figures_record is not None:
        images = [
            "",
            *(f'<img src="{figures_link}/{name}.png" width="{width}" '
              f'alt="{html.escape(FIGURES[name][0])}">'
              for name, (width, _) in README_FIGURES.items()), "",
            f"Above: {'; '.join(what for _, what in README_FIGURES.values())}. Every figure is in "
            f"[{figures_link}/]({figures_link}/) ({figures_record['total size']}, from commit "
            f"{figures_record['commit']}, {figures_record['date']}; `provenance.json` says more)."
        ]
    earlier = f", its runs trained by {EARLIER}" if EARLIER in prov["code hash"] else ""
    return "\n".join([
        BEGIN, "", *([one_line(answer["text"]), ""] if answer else []),
        f"**Verdicts** ({prov['profile']} profile, commit {prov['commit']}{earlier}, "
        f"{prov['date']}, on {prov['device']}): {counts}. {cost}", "", *verdict_table(by_paper),
        *images, "",
        f"The headline findings, each beside its figure, every row and its provenance: "
        f"[{results_name}]({results_name}).", "", END
    ])


def edge_note(card):
    """A sentence on the verdicts near their tolerance's edge (aevb.scorecard.near_edge), if any."""
    edge = [row for row in card if near_edge(row)]
    if not edge:
        return []
    flips = sum(row["verdict"] == "reproduced" for row in edge)
    return [f"{findings.count(len(edge), 'verdict')} ({flips} reproduced, {len(edge) - flips} "
            f"not) within {NEAR_EDGE:g} of a tolerance of the edge, where another seed could turn "
            "them: `near the edge` in the table of every row.", ""]


def one_line(markdown):
    return re.sub(r"\s+", " ", markdown).strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("profile", "runs", "figures", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--readme", help="also rewrite the results block of this README")
    parser.add_argument(
        "--publish-figures", metavar="DIR",
        help="also write every figure as a small PNG into DIR, with DIR/provenance.json")
    parser.add_argument("--make-started", type=float,
                        help="when make started (epoch seconds), to say how long it took")
    parser.add_argument("--jobs", default="1", help="make's -j, for the record")
    args = parser.parse_args(argv)
    figures_dir, out = Path(args.figures), Path(args.out)
    card_path = figures_dir / "scorecard.csv"
    if not card_path.exists():
        sys.exit(
            f"{card_path} is missing: notebooks/scorecard.ipynb should have made it (make figures)")
    with open(card_path, newline="") as f:
        card = list(csv.DictReader(f))
    by_paper = verdicts_by_paper(card)
    prov = provenance(args.profile, Path(args.runs), args.make_started, args.jobs, previous=out)
    found = findings.headlines(figures_dir)
    published_dir = Path(args.publish_figures) if args.publish_figures else None
    figures_record = publish_figures(figures_dir, published_dir, prov) if published_dir else None
    # the figures RESULTS.md shows: the published ones, or else the build's own
    shown_dir = published_dir or figures_dir
    link = Path(os.path.relpath(shown_dir.resolve(), out.parent.resolve())).as_posix()

    lines = [
        "# Results", "",
        f"Written by `make results` (part of `make paper`) from `{card_path.as_posix()}` and the "
        "figure "
        "notebooks' findings; nothing here is typed by hand. Rerun `make paper` to refresh it.", "",
        "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in prov.items()), "",
        "## Verdicts per paper", "", *verdict_table(by_paper), "",
        "`reproduced`: within the row's tolerance of the published value (or the claim's test "
        "holds); "
        "`not run at this scale`: our runs trained fewer than half the published samples (the "
        "`paper` "
        "profile runs them). The rules: `notebooks/scorecard.ipynb`.", "",
        *edge_note(card),
        *([f"The figures: `{link}/`, {figures_record['total size']}.", ""] if figures_record else
          []), "## Headline findings", "", "Each finding beside the figure that shows it.", ""
    ]
    shown = set()
    for f in found:
        lines += [
            f"### {f['title'] or f['key']}", "",
            one_line(f["text"]) + f" (`notebooks/{f['notebook']}.ipynb`)", "",
            *(line for d in findings.details(figures_dir, f) for line in (one_line(d["text"]), ""))
        ]
        figure = f.get("figure")
        if figure in FIGURES and figure not in shown:
            caption = FIGURES[figure][0]
            lines += [f"![{caption.split(':')[0]}]({link}/{figure}.png)", "", f"*{caption}.*", ""]
            shown.add(figure)
        elif figure in FIGURES:
            lines += [
                f"*{FIGURES[figure][0].split(':')[0]}: shown above "
                f"([`{figure}.png`]({link}/{figure}.png)).*",
                ""
            ]
    if not found:
        lines += ["(no figure notebook recorded a headline finding)", ""]
    lines += ["## Every row", "",
              "`ours` is the mean over the row's runs (± their sd where n > 1); `in tolerances` is "
              "ours minus the published value over the row's tolerance (within ±1: reproduced); "
              "`samples` is what the runs trained (the fewest of them), against the published "
              "budget in `what`.", "",
              "| source | what | published | ours | n | tolerance | in tolerances | samples "
              "| verdict |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in card:
        n = number_or_nan(row["n_runs"])
        ours = ours_cell(row, counted=False)
        published = f"{float(row['published']):.6g}" if row["published"] else ""
        tolerance = f"{float(row['tolerance']):g}" if row.get("tolerance") else ""
        units = number_or_nan(row.get("in_tolerances"))
        units = "" if math.isnan(units) else f"{units:+.2f}"
        trained = number_or_nan(row.get("samples_trained"))
        trained = "" if math.isnan(trained) else findings.samples(trained)
        what = row["what"].replace("|", "\\|")
        count = int(n) if n == n and n else ""
        lines.append(f"| {row['source']} | {what} | {published} | {ours} | {count} | "
                     f"{tolerance} | {units} | {trained} | {row['verdict']}"
                     f"{' (near the edge)' if near_edge(row) else ''} |")
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out} ({len(card)} rows, {len(found)} headline findings)")

    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            sys.exit(
                f"{readme} has no results block ({BEGIN} ... {END}); add one where the summary "
                "belongs"
            )
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        # the README shows the published figures (by default its folder's figures/) where they match
        # their provenance
        record_dir = published_dir or readme.parent / "figures"
        record = published_figures(record_dir)
        figures_link = Path(os.path.relpath(record_dir.resolve(),
                                            readme.parent.resolve())).as_posix()
        block = summary_block(
            by_paper, prov,
            out.name if out.parent.resolve() == readme.parent.resolve() else str(out), figures_link,
            record, answer=next((f for f in found if f["key"] == ANSWER), None))
        new = before + block + after
        if new != text:
            atomic_write_text(readme, new)
            print(f"rewrote the results block of {readme}")


if __name__ == "__main__":
    main()
