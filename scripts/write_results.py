"""Write the results summary (`make results`): the scorecard's verdicts per paper and the headline
findings of the figure notebooks, as Markdown, with the provenance of the build that made them.

`write_results.py --profile P --runs DIR --figures DIR --out RESULTS.md [--readme README.md]`

Everything here is read from the build: the verdicts from scorecard.csv, the sentences from the
notebooks' findings files (aevb.findings), the devices, torch versions, code hashes and training time
from the run folders. With --readme, the block between README.md's RESULTS markers is rewritten too,
so the README's first screen shows the committed build's verdicts without anyone typing them.
"""
import argparse
import csv
import json
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
from aevb.files import atomic_write_text
from aevb.scorecard import VERDICTS, verdicts_by_paper

BEGIN, END = "<!-- RESULTS:BEGIN (written by make results from scorecard.csv; do not edit) -->", "<!-- RESULTS:END -->"


MAKE_CALL = "the make call that trained its runs"


def previous_value(path, key):
    """A row's value in an earlier RESULTS.md's provenance table, or None."""
    path = Path(path)
    for line in (path.read_text().splitlines() if path.exists() else []):
        if line.startswith(f"| {key} | "):
            return line[len(f"| {key} | "):].rstrip(" |")
    return None


def provenance(profile, runs_dir, make_started=None, jobs=None, previous=None):
    """What made this build: profile, commit, code hashes, devices, torch versions, training time, date;
    with make_started (the epoch seconds at which `make` started), how long that make call took to here
    and how many runs it trained; where it trained none (a figure-only rebuild), what the `previous`
    RESULTS.md said of the call that did."""
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
            trained_now += bool(make_started) and (folder / "model.pt").stat().st_mtime >= make_started
    if trained_now:
        call = (f"{(time.time() - make_started) / 60:.0f} min with make -j{jobs} on {os.cpu_count()} cores, from its "
                f"start to these results; it trained {trained_now} of the {len(metrics)} runs")
    else:
        call = previous_value(previous, MAKE_CALL) if previous else None
    join = lambda values: ", ".join(sorted(set(values))) or "none"
    return {"profile": profile, "commit": commit, "code hash": join(c.get("code_hash", "") for c in configs),
            "runs": str(len(metrics)), "device": join(m["device"] for m in metrics),
            "torch": join(m["torch_version"] for m in metrics),
            "training time (sum over runs)": f"{sum(m['wall_time'] for m in metrics) / 60:.0f} min",
            "longest run": f"{max((m['wall_time'] for m in metrics), default=0) / 60:.0f} min",
            **({MAKE_CALL: call} if call else {}),
            "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def verdict_table(by_paper):
    present = [v for v in VERDICTS if any(c.get(v) for c in by_paper.values())]
    lines = ["| paper | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
    for paper, counts in by_paper.items():
        lines.append(f"| {paper} | " + " | ".join(str(counts.get(v, 0)) for v in present) + " |")
    return lines


def summary_block(by_paper, prov, results_name):
    total = Counter()
    for counts in by_paper.values():
        total.update(counts)
    counts = ", ".join(f"{total[v]} {v}" for v in VERDICTS if total[v])
    took = prov.get(MAKE_CALL)
    cost = (f"Its {prov['runs']} runs trained for {prov['training time (sum over runs)']} in all (the longest "
            f"{prov['longest run']})" + (f"; the make call that trained them took {took}." if took else "."))
    return "\n".join([BEGIN, "", f"**Verdicts** ({prov['profile']} profile, commit {prov['commit']}, {prov['date']},"
                      f" on {prov['device']}): {counts}. {cost}", "", *verdict_table(by_paper), "",
                      f"The headline findings, every row and its provenance: [{results_name}]({results_name}).",
                      "", END])


def one_line(markdown):
    return re.sub(r"\s+", " ", markdown).strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("profile", "runs", "figures", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--readme", help="also rewrite the results block of this README")
    parser.add_argument("--make-started", type=float, help="when make started (epoch seconds), to say how long it took")
    parser.add_argument("--jobs", default="1", help="make's -j, for the record")
    args = parser.parse_args(argv)
    figures_dir, out = Path(args.figures), Path(args.out)
    card_path = figures_dir / "scorecard.csv"
    if not card_path.exists():
        sys.exit(f"{card_path} is missing: notebooks/scorecard.ipynb should have made it (make figures)")
    with open(card_path, newline="") as f:
        card = list(csv.DictReader(f))
    by_paper = verdicts_by_paper(card)
    prov = provenance(args.profile, Path(args.runs), args.make_started, args.jobs, previous=out)
    found = findings.headlines(figures_dir)

    lines = ["# Results", "",
             f"Written by `make results` (part of `make paper`) from `{card_path.as_posix()}` and the figure "
             "notebooks' findings; nothing here is typed by hand. Rerun `make paper` to refresh it.", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in prov.items()), "",
             "## Verdicts per paper", "", *verdict_table(by_paper), "",
             "`reproduced`: within the row's tolerance of the published value (or the claim's test holds); "
             "`not run at this scale`: our runs trained fewer than half the published samples (the `paper` "
             "profile runs them). The rules: `notebooks/scorecard.ipynb`.", "",
             "## Headline findings", ""]
    for f in found:
        leads = f["text"].lstrip().startswith("**")  # a finding that opens in bold is its own title
        title = f"**{f['title']}.** " if f["title"] and not leads else ""
        lines.append(f"- {title}{one_line(f['text'])} (`notebooks/{f['notebook']}.ipynb`)")
    if not found:
        lines.append("- (no figure notebook recorded a headline finding)")
    lines += ["", "## Every row", "", "| source | what | published | ours | verdict |", "|---|---|---:|---:|---|"]
    for row in card:
        ours = f"{float(row['ours']):.2f}" if row["ours"] not in ("", "nan") else ""
        if ours and int(row["n_runs"]) > 1:
            ours += f" ± {float(row['ours_sd']):.2f} ({row['n_runs']} runs)"
        published = f"{float(row['published']):.6g}" if row["published"] else ""
        what = row["what"].replace("|", "\\|")
        lines.append(f"| {row['source']} | {what} | {published} | {ours} | {row['verdict']} |")
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out} ({len(card)} rows, {len(found)} headline findings)")

    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            sys.exit(f"{readme} has no results block ({BEGIN} ... {END}); add one where the summary belongs")
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        block = summary_block(by_paper, prov, out.name if out.parent.resolve() == readme.parent.resolve() else str(out))
        new = before + block + after
        if new != text:
            atomic_write_text(readme, new)
            print(f"rewrote the results block of {readme}")


if __name__ == "__main__":
    main()
