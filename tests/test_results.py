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
        writer = csv.DictWriter(f, ["source", "what", "published", "ours", "ours_sd", "n_runs", "verdict"])
        writer.writeheader()
        for source, what, published, ours, verdict in ROWS:
            writer.writerow(dict(source=source, what=what, published=published, ours=ours, ours_sd="",
                                 n_runs=1 if ours else 0, verdict=verdict))
    say = findings.Findings("scorecard", folder, display=False)
    say("gap", "Wake-sleep trails AEVB by **8.3 nats**.", headline=True, title="Wake-sleep")
    say("detail", "Not a headline.")
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
    assert "**Wake-sleep.** Wake-sleep trails AEVB by **8.3 nats**." in text and "Not a headline" not in text
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert "| profile | default |" in text and f"| commit | {head.stdout.strip() or 'unknown'}" in text
    assert "| runs | 0 |" in text  # provenance is read from the run folders, here none
    assert "| AEVB Nz = 3 at 1e8 | -120 | -130.00 | not run at this scale |" in text
    assert "| AEVB loss | 101.1 | 101.30 | reproduced |" in text


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
    later = write(tmp_path, figures_dir, "--make-started", str(time.time() + 1), "--jobs", "2")  # trained nothing
    assert line in later and "it trained 1 of the 1 runs" in later
    (tmp_path / "RESULTS.md").unlink()
    fresh = write(tmp_path, figures_dir, "--make-started", str(time.time() + 1))
    assert write_results.MAKE_CALL not in fresh  # no record of the call that trained them: nothing said
