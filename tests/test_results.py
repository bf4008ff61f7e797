"""scripts/write_results.py: RESULTS.md and README.md's summary block come from scorecard.csv and the
notebooks' findings; profiles keep to their own folders."""
import csv
import re
import subprocess
import sys

import pytest

from aevb import findings
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import write_results  # noqa: E402

ROWS = [("Andriciuc (2025), Table 1", "AEVB loss", "101.1", "101.3", "reproduced"),
        ("Andriciuc (2025), claim 2", "wake-sleep comparable", "0.06", "8.3", "not reproduced"),
        ("Kingma & Welling (2013), Figure 2", "AEVB Nz = 3 at 1e8", "-120", "-130", "not run at this scale"),
        ("Burda, Grosse & Salakhutdinov (2015), Table 1", "two layers", "85", "", "out of scope")]


@pytest.fixture
def figures_dir(tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    with open(folder / "scorecard.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["source", "what", "published", "ours", "ours_sd", "n_runs", "tolerance",
                                    "in_tolerances", "samples_trained", "verdict"])
        writer.writeheader()
        for source, what, published, ours, verdict in ROWS:
            tolerance = {"AEVB loss": 1, "AEVB Nz = 3 at 1e8": 2, "wake-sleep comparable": 8}.get(what, "")
            writer.writerow(dict(source=source, what=what, published=published, ours=ours, ours_sd="",
                                 n_runs=1 if ours else 0, verdict=verdict, tolerance=tolerance,
                                 in_tolerances=(float(ours) - float(published)) / tolerance if tolerance else "",
                                 samples_trained=3_000_000 if ours else ""))
    say = findings.Findings("scorecard", folder, display=False)
    say("gap", "Wake-sleep {gap:trails/leads} AEVB by **{gap:abs.1f} nats**.", headline=True, title="Wake-sleep",
        figure="report_table1", gap=8.3)
    say("detail", "Not a headline.")
    say("gap_seeds", "Its detail, keyed after it.")
    return folder


def write(tmp_path, figures_dir, *extra):
    out = tmp_path / "RESULTS.md"
    write_results.main(["--profile", "default", "--runs", str(tmp_path / "runs"), "--figures", str(figures_dir),
                        "--out", str(out), *extra])
    return out.read_text()


def test_results_hold_the_verdicts_per_paper_the_headlines_and_the_provenance(tmp_path, figures_dir):
    text = write(tmp_path, figures_dir)
    assert "| Andriciuc (2025) | 1 | 1 | 0 | 0 |" in text  # reproduced, not, not run, out of scope
    assert "| Kingma & Welling (2013) | 0 | 0 | 1 | 0 |" in text
    assert "### Wake-sleep\n\nWake-sleep trails AEVB by **8.3 nats**. (`notebooks/scorecard.ipynb`)" in text
    assert "Not a headline" not in text
    assert "(`notebooks/scorecard.ipynb`)\n\nIts detail, keyed after it.\n\n![Replication" in text  # under it
    assert "![Replication report, Table 1](figures/report_table1.png)" in text  # beside its figure
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert "| profile | default |" in text and f"| commit | {head.stdout.strip() or 'unknown'}" in text
    assert "| runs | 0 |" in text  # provenance is read from the run folders, here none
    assert "| AEVB Nz = 3 at 1e8 | -120 | -130.00 | 1 | 2 | -5.00 | 3×10^6 | not run at this scale |" in text
    assert "| AEVB loss | 101.1 | 101.30 | 1 | 1 | +0.20 | 3×10^6 | reproduced |" in text
    # 8.24 nats against a tolerance of 8: a verdict near its edge says so; one far inside or not judged does not
    assert "| wake-sleep comparable | 0.06 | 8.30 | 1 | 8 | +1.03 | 3×10^6 | not reproduced (near the edge) |" in text
    assert "1 verdict (0 reproduced, 1 not) within 0.25 of a tolerance of the edge" in text
    assert text.count("(near the edge)") == 1  # the Nz = 3 row, -5 tolerances and not run at this scale, is not
    assert "| two layers | 85 |  |  |  |  |  | out of scope |" in text  # nothing run: nothing to show


def test_the_readme_block_is_rewritten_and_the_rest_kept(tmp_path, figures_dir):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{write_results.BEGIN}\nold text\n{write_results.END}\n\n## More\n")
    write(tmp_path, figures_dir, "--readme", str(readme))
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith(f"{write_results.END}\n\n## More\n")
    assert "old text" not in text and "1 reproduced, 1 not reproduced, 1 not run at this scale, 1 out of scope" in text
    assert "[RESULTS.md](RESULTS.md)" in text
    before = readme.stat().st_mtime_ns
    write(tmp_path, figures_dir, "--readme", str(readme))  # nothing changed: the README is not rewritten
    assert readme.stat().st_mtime_ns == before


def test_a_readme_without_the_block_is_refused(tmp_path, figures_dir):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    with pytest.raises(SystemExit, match="no results block"):
        write(tmp_path, figures_dir, "--readme", str(readme))
    assert readme.read_text() == "# Title\n"


def test_a_missing_scorecard_is_refused(tmp_path):
    (tmp_path / "figures").mkdir()
    with pytest.raises(SystemExit, match="scorecard.csv is missing"):
        write(tmp_path, tmp_path / "figures")


def test_each_profile_writes_only_its_own_folders():
    """make paper in one profile never touches another's figures, build or results (make -n: nothing runs)."""
    commands = {}
    for profile in ("smoke", "default", "paper"):
        result = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "paper", f"PROFILE={profile}"],  # -B: every recipe
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        commands[profile] = re.sub(r"\\\n\s*", "", result.stdout)  # recipes' continued lines joined
    for profile, text in commands.items():
        assert f"--figures figures/{profile}" in text and f"--html build/{profile}/html" in text, profile
        others = [p for p in commands if p != profile]
        assert not any(f"figures/{o}" in text or f"build/{o}/" in text for o in others), profile
    assert "--out RESULTS.md --readme README.md" in commands["default"]
    assert "--out build/smoke/RESULTS.md" in commands["smoke"] and "--readme" not in commands["smoke"]


def test_the_cost_of_the_make_call_that_trained_the_runs_is_kept_by_a_figure_only_rebuild(tmp_path, figures_dir):
    """RESULTS.md says how long the make call that trained the runs took; a later call that trained none (a
    figure-only rebuild) keeps that line rather than report its own few minutes as the build's cost."""
    import json
    import time

    from aevb import grid
    run = grid.runs(profile="default")[0]
    folder = run.folder(tmp_path / "runs")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"code_hash": "abc"}))
    (folder / "metrics.json").write_text(json.dumps({"wall_time": 120.0, "device": "cpu", "torch_version": "x"}))
    (folder / "model.pt").write_bytes(b"")
    started = time.time() - 600  # ten minutes before now: this call trained the run
    text = write(tmp_path, figures_dir, "--make-started", str(started), "--jobs", "2")
    line = f"| {write_results.MAKE_CALL} | 10 min with make -j2 on "
    assert line in text and "it trained 1 of the 1 runs" in text
    from aevb.runs import code_hash  # runs of other code: said, with this commit's hash
    assert f"| code hash | abc (an earlier commit's code: this commit's hashes {code_hash()}) |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"{write_results.BEGIN}\n{write_results.END}\n")
    write(tmp_path, figures_dir, "--readme", str(readme))
    assert f", its runs trained by {write_results.EARLIER}, " in readme.read_text()
    (folder / "config.json").write_text(json.dumps({"code_hash": code_hash()}))
    assert f"| code hash | {code_hash()} |" in write(tmp_path, figures_dir, "--make-started", str(started),
                                                       "--jobs", "2")
    later = write(tmp_path, figures_dir, "--make-started", str(time.time() + 1), "--jobs", "2")  # trained nothing
    assert line in later and "it trained 1 of the 1 runs" in later
    (tmp_path / "RESULTS.md").unlink()
    fresh = write(tmp_path, figures_dir, "--make-started", str(time.time() + 1))
    assert write_results.MAKE_CALL not in fresh  # no record of the call that trained them: nothing said


# ---- the figures a reader needs, published as small PNGs with their provenance --------------------------------

@pytest.fixture
def drawn(figures_dir):
    """figures_dir with every figure of FIGURES drawn (a line plot, 800 x 600 pixels at 100 dpi)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from aevb.figures import FIGURES
    for n, name in enumerate(FIGURES):
        fig, ax = plt.subplots(figsize=(8 + n % 5, 6))
        ax.plot(range(10), [(i - n) ** 2 for i in range(10)], label=name)
        ax.legend()
        fig.savefig(figures_dir / f"{name}.png", dpi=100)
        plt.close(fig)
    return figures_dir


def block(text):
    return text.split(write_results.BEGIN)[1].split(write_results.END)[0]


def test_published_figures_are_small_pngs_with_their_provenance_and_the_readme_shows_them(tmp_path, drawn):
    """--publish-figures writes every figure into a folder of its own (here a temporary one, never the committed
    figures/), as PNGs no wider than PUBLISHED_WIDTH, with provenance.json (commit, code hash, machine, date,
    each file's SHA-256 and the total size); the README's block shows README_FIGURES from there, and
    RESULTS.md each headline finding beside its figure, by relative links that resolve."""
    import hashlib
    import json

    from PIL import Image

    from aevb.figures import FIGURES
    published, readme = tmp_path / "repo" / "figures", tmp_path / "repo" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"# Title\n\n{write_results.BEGIN}\n{write_results.END}\n")
    (published / "dropped_figure.png").parent.mkdir()
    (published / "dropped_figure.png").write_bytes(b"a figure FIGURES no longer names")
    out = tmp_path / "repo" / "RESULTS.md"
    write_results.main(["--profile", "default", "--runs", str(tmp_path / "runs"), "--figures", str(drawn),
                        "--out", str(out), "--readme", str(readme), "--publish-figures", str(published)])
    record = json.loads((published / "provenance.json").read_text())
    assert set(record["files"]) == {f"{name}.png" for name in FIGURES}
    assert not (published / "dropped_figure.png").exists()
    for key in ("profile", "commit", "code hash", "machine", "date", "total size"):
        assert record[key], key
    total = 0
    for name, meta in record["files"].items():
        data = (published / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
        total += len(data)
        with Image.open(published / name) as image:
            assert image.width <= write_results.PUBLISHED_WIDTH
            original = Image.open(drawn / name)
            assert image.width == min(original.width, write_results.PUBLISHED_WIDTH)
        assert len(data) < (drawn / name).stat().st_size  # smaller than the build's own
    assert record["total bytes"] == total and record["total size"].startswith(f"{total / 1e6:.2f} MB")
    shown = block(readme.read_text())
    links = re.findall(r'<img src="([^"]+)"', shown)
    assert links == [f"figures/{name}.png" for name in write_results.README_FIGURES]
    assert all((readme.parent / link).exists() for link in links)
    assert record["total size"] in shown
    results = out.read_text()
    assert "![Replication report, Table 1](figures/report_table1.png)" in results
    assert (out.parent / "figures/report_table1.png").exists()


def test_the_readme_shows_no_image_where_the_published_figures_are_missing_or_differ(tmp_path, drawn):
    readme = tmp_path / "repo" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"{write_results.BEGIN}\n{write_results.END}\n")
    args = ["--profile", "default", "--runs", str(tmp_path / "runs"), "--figures", str(drawn),
            "--out", str(tmp_path / "repo" / "RESULTS.md"), "--readme", str(readme)]
    write_results.main(args)  # nothing published beside the README: no image
    assert "<img" not in block(readme.read_text())
    published = readme.parent / "figures"
    write_results.main(args + ["--publish-figures", str(published)])
    assert "<img" in block(readme.read_text())
    assert write_results.published_figures(published)
    (published / "kingma_fig2_lower_bound.png").write_bytes(b"another build's figure")  # no longer its provenance's
    assert write_results.published_figures(published) is None
    write_results.main(args)
    assert "<img" not in block(readme.read_text())
    (published / "provenance.json").unlink()
    assert write_results.published_figures(published) is None
