"""Paper-scale runs (10^8 samples) committed as data, so that the scorecard judges the rows at that
scale without retraining them: `results/paper-scale/<dataset>/<run>/` holds a finished run's
config.json, history.csv and metrics.json (its model and checkpoints stay where it trained) and
provenance.json, which says what trained it: the commit and whether its tree was clean, the machine,
the precision, torch, and the training time.

    python -m aevb.paper_scale publish runs/paper mnist/aevb_z20_kingma_s1 [...]

copies finished runs of a `make runs PROFILE=paper` tree (any checkout: the commit is read from the
run folder's own repository). Anyone can check a published run by retraining it:
`make runs/paper/mnist/aevb_z20_kingma_s1/metrics.json PROFILE=paper` at the commit it names.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from aevb import paths
from aevb.files import atomic_write_text

FILES = ("config.json", "history.csv", "metrics.json")


def cpu_model():
    """The CPU's model name as the kernel reports it (platform.processor() is often empty on
    Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git(folder, *args):
    out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(run_dir):
    """What trained the finished run in run_dir: commit (and whether its tree had other changes to
    tracked files), machine, precision, torch, device and training time."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    config = json.loads((Path(run_dir) / "config.json").read_text())
    commit = git(run_dir, "rev-parse", "HEAD")
    dirty = git(run_dir, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit, "clean": dirty == "" if dirty is not None else None,
        "code_hash": config.get("code_hash"), "machine": cpu_model(),
        "cpus": os.cpu_count(), "precision": "float32", "torch": metrics.get("torch_version"),
        "device": metrics.get("device"), "samples": metrics["samples"],
        "training_hours": round(metrics["wall_time"] / 3600, 2),
    }


def publish(runs_dir, name, dest=paths.PAPER_SCALE):
    """Copy the finished run `name` ('<dataset>/<run>') of runs_dir into dest with its provenance;
    return the new folder. A folder without metrics.json holds no finished run: refused."""
    source, target = Path(runs_dir) / name, Path(dest) / name
    if not (source / "metrics.json").exists():
        raise FileNotFoundError(
            f"{source} holds no finished run (no metrics.json): nothing to publish")
    target.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        atomic_write_text(target / file, (source / file).read_text())
    atomic_write_text(target / "provenance.json",
                      json.dumps(provenance(source), indent=2, sort_keys=True) + "\n")
    return target


def load(folder=paths.PAPER_SCALE, grid=None):
    """{Run: summary} of the published runs of the grid in `folder`, each summary with its
    `provenance`."""
    import aevb.grid
    from aevb.runs import load_summary
    out = {}
    for run in aevb.grid.runs(grid=grid):
        run_dir = run.folder(folder)
        if (run_dir / "metrics.json").exists():
            out[run] = {**load_summary(run_dir),
                        "provenance": json.loads((run_dir / "provenance.json").read_text())}
    return out


def described(summaries):
    """Where judged runs come from, in a few words, for a scorecard note."""
    seen = [s["provenance"] for s in summaries]
    commits = sorted({(p["commit"] or "?")[:7] for p in seen})
    machines = sorted({p["machine"] for p in seen})
    hours = sum(p["training_hours"] for p in seen)
    return (f"trained to {min(p['samples'] for p in seen):.3g} samples as published in "
            f"results/paper-scale (commit {', '.join(commits)}; {'; '.join(machines)}; "
            f"{', '.join(sorted({p['precision'] for p in seen}))}; {hours:.1f} h of training)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="copy finished runs with their provenance")
    pub.add_argument("runs_dir", type=Path)
    pub.add_argument("names", nargs="+", help="<dataset>/<run>, as the grid names it")
    pub.add_argument("--dest", type=Path, default=paths.PAPER_SCALE)
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            print(publish(args.runs_dir, name, args.dest))
        except FileNotFoundError as e:
            sys.exit(str(e))


if __name__ == "__main__":
    main()
