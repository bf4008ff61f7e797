"""Paper-scale runs (10^8 samples) committed as data, so that the scorecard judges the rows at that
scale without retraining them: `results/paper-scale/<dataset>/<run>/` holds a finished run's
config.json, history.csv and metrics.json (its model and checkpoints stay where it trained) and
provenance.json, which says what trained it: the commit and whether its tree was clean, the machine,
the precision, torch, and the training time.

    python -m aevb.paper_scale publish runs/paper mnist/aevb_z20_kingma_s1 [...]

copies finished runs of a `make runs PROFILE=paper` tree (any checkout: the commit is read from the
run folder's own repository). Anyone can check a published run by retraining it:
`make runs/paper/mnist/aevb_z20_kingma_s1/metrics.json PROFILE=paper` at the commit it names.

A run of 10^8 samples outlasts many a machine's session (hours on a CPU), so an unfinished one is
parked in the repository and goes on in any later clone, on any machine:

    python -m aevb.paper_scale park runs/paper mnist/aevb_z20_kingma_s1  # then commit
    python -m aevb.paper_scale restore runs/paper                         # in a later clone
    make runs/paper/mnist/aevb_z20_kingma_s1/metrics.json PROFILE=paper   # goes on from there
    python -m aevb.paper_scale status                                     # how far each has come

`park` copies the run's latest checkpoint into results/unfinished/<dataset>/<run>/ with
progress.json: samples seen, training hours, its steady samples per second (`steady_rate`: a pause
does not count), the code hash that trains it, and its segments (which machine, at which commit,
trained which samples). A checkpoint resumes only under the code that wrote it (its name holds the
config's hash, code hash included): `restore` refuses one of other code and names the commit to
check out (the newest with that code: `newest_commit_with_code`). `publish` folds the segments into
the provenance and removes the parked checkpoint. A finished run is judged on its own numbers
wherever it trained: a run resumed on another CPU ends within rounding of an uninterrupted one, not
bit for bit.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from aevb import paths
from aevb.files import atomic_write, atomic_write_text

FILES = ("config.json", "history.csv", "metrics.json")
# unfinished paper-scale runs' checkpoints, committed so that a later clone goes on from them;
# beside the published runs (`unfinished_beside`)
UNFINISHED = paths.PAPER_SCALE.parent / "unfinished"
PROGRESS = "progress.json"
# the shortest interval between history rows that steady_rate counts (training samples)
STEADY_INTERVAL = 10**6


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


def where(run_dir):
    """The machine and the commit that train in run_dir (and whether its tree had other changes to
    tracked files)."""
    dirty = git(run_dir, "status", "--porcelain", "--untracked-files=no")
    return {"machine": cpu_model(), "cpus": os.cpu_count(),
            "commit": git(run_dir, "rev-parse", "HEAD"),
            "clean": dirty == "" if dirty is not None else None}


def provenance(run_dir):
    """What trained the finished run in run_dir: commit (and whether its tree had other changes to
    tracked files), machine, precision, torch, device, training time (wall time, pauses included)
    and its steady samples per second (`steady_rate`)."""
    from aevb.runs import load_summary
    summary = load_summary(run_dir)
    metrics, config = summary["metrics"], summary["config"]
    return {
        **where(run_dir), "code_hash": config.get("code_hash"),
        "precision": "float32", "torch": metrics.get("torch_version"),
        "device": metrics.get("device"), "samples": metrics["samples"],
        "training_hours": round(metrics["wall_time"] / 3600, 2),
        "samples_per_second": rounded(steady_rate(summary["history"])),
    }


def rounded(rate):
    return None if rate is None else round(rate)


def unfinished_beside(published):
    """The folder of the parked runs that belong with the published runs in `published`."""
    return Path(published).parent / UNFINISHED.name


def publish(runs_dir, name, dest=paths.PAPER_SCALE, parked=None):
    """Copy the finished run `name` ('<dataset>/<run>') of runs_dir into dest with its provenance;
    return the new folder. A folder without metrics.json holds no finished run: refused. A run that
    was parked in `parked` (None: the folder beside dest, `unfinished_beside`) by the code that
    finished it gets its segments in the provenance, and its parked checkpoint is removed."""
    parked = unfinished_beside(dest) if parked is None else parked
    source, target = Path(runs_dir) / name, Path(dest) / name
    if not (source / "metrics.json").exists():
        raise FileNotFoundError(
            f"{source} holds no finished run (no metrics.json): nothing to publish")
    record = provenance(source)
    parked_folder = Path(parked) / name
    progress = read_progress(parked_folder)
    if progress is not None and progress["code_hash"] != record["code_hash"]:
        progress = None  # parked by other code: not this run's past, and left where it is
    if progress is not None:  # trained in segments: those parked, then this machine's
        last = segment(source, progress["samples_seen"], record["samples"],
                       record["training_hours"] - progress["training_hours"])
        record["segments"] = joined(progress["segments"], last)
        record["machine"] = "; ".join(dict.fromkeys(s["machine"] for s in record["segments"]))
    target.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        atomic_write_text(target / file, (source / file).read_text())
    atomic_write_text(target / "provenance.json",
                      json.dumps(record, indent=2, sort_keys=True) + "\n")
    if progress is not None:
        remove_parked(parked_folder, Path(parked))
    return target


# ---- unfinished runs, parked in the repository -------------------------------------------------
def checkpoint_of(run_dir):
    """The checkpoint in run_dir (None: none)."""
    found = sorted(Path(run_dir).glob("checkpoint-*.pt"))
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise RuntimeError(f"{run_dir} holds several checkpoints ({names}): make keeps one; "
                           "remove the stale ones")
    return found[0] if found else None


def read_checkpoint(path):
    """What a checkpoint says of where its run stands: samples_seen, wall_time (training seconds)
    and the history so far."""
    import torch
    state = torch.load(path, map_location="cpu", weights_only=False)
    return {"samples_seen": int(state["samples_seen"]), "wall_time": float(state["wall_time"]),
            "history": state.get("history", [])}


def checkpoint_position(path):
    """(samples seen, training seconds) where a checkpoint stands."""
    state = read_checkpoint(path)
    return state["samples_seen"], state["wall_time"]


def steady_rate(history, at_least=STEADY_INTERVAL):
    """Training samples per second as a run goes when it runs: the median over the intervals
    between its history's rows of at least `at_least` samples (the short early ones are mostly
    evaluation). A pause (a stopped process, a machine asleep) falls in one interval and barely
    moves the median, where the samples over the whole wall time count it in full. None without
    such an interval. history: rows with samples and wall_time."""
    timed = [row for row in history if "wall_time" in row]
    rates = [(b["samples"] - a["samples"]) / (b["wall_time"] - a["wall_time"])
             for a, b in zip(timed, timed[1:])
             if b["samples"] - a["samples"] >= at_least and b["wall_time"] > a["wall_time"]]
    return statistics.median(rates) if rates else None


def read_progress(folder):
    file = Path(folder) / PROGRESS
    return json.loads(file.read_text()) if file.exists() else None


def run_params(run_dir):
    """What make's .params file beside run_dir says of the run ({} without one)."""
    file = Path(run_dir).parent / f"{Path(run_dir).name}.params"
    return json.loads(file.read_text()) if file.exists() else {}


def newest_commit_with_code(commit, root=paths.ROOT, files=None):
    """The newest commit of root's history whose training code (`files`: aevb.runs.TRAINING_CODE)
    is `commit`'s: the one before the first later commit that changed one of those files (HEAD if
    none did), so that a parked run goes on with this project's newest tools around its code.
    None where root holds no history with `commit` in it."""
    from aevb.runs import TRAINING_CODE
    if not commit or git(root, "merge-base", "--is-ancestor", commit, "HEAD") is None:
        return None
    changed = git(root, "log", "--format=%H", "--reverse", f"{commit}..HEAD", "--",
                  *(files or TRAINING_CODE))
    if changed is None:
        return None
    return git(root, "rev-parse", f"{changed.split()[0]}^" if changed else "HEAD")


def training_code_hash(run_dir):
    """The hash of the code that trains the run in run_dir: make's .params records it; else the
    code of the checkout that holds run_dir (this one's outside any)."""
    from aevb.runs import code_hash
    recorded = run_params(run_dir).get("code_hash")
    root = git(run_dir, "rev-parse", "--show-toplevel")
    return recorded or code_hash(root=Path(root) if root else paths.ROOT)


def segment(run_dir, start, end, hours):
    """Samples start..end of a run, trained on this machine at run_dir's commit in `hours`."""
    return {**where(run_dir), "samples_from": start, "samples_to": end, "hours": round(hours, 2)}


def joined(segments, new):
    """segments and the new one after them, merged into the last where it goes on from it on the
    same machine and commit."""
    segments = [dict(s) for s in segments]
    last = segments[-1] if segments else None
    same = ("machine", "cpus", "commit", "clean")
    if last and all(last[k] == new[k] for k in same) and last["samples_to"] == new["samples_from"]:
        last.update(samples_to=new["samples_to"], hours=round(last["hours"] + new["hours"], 2))
    elif new["samples_to"] > new["samples_from"]:
        segments.append(new)
    return segments


def park(runs_dir, name, dest=UNFINISHED):
    """Copy the unfinished run `name`'s latest checkpoint into dest/name with progress.json; return
    (that folder, the progress). A finished run is published instead; a parked checkpoint of this
    config that has seen more samples is never replaced."""
    source, target = Path(runs_dir) / name, Path(dest) / name
    if (source / "metrics.json").exists():
        raise ValueError(f"{source} is finished: publish it (python -m aevb.paper_scale publish)")
    checkpoint = checkpoint_of(source)
    if checkpoint is None:
        raise FileNotFoundError(f"{source} holds no checkpoint: nothing to park")
    state = read_checkpoint(checkpoint)
    seen, seconds = state["samples_seen"], state["wall_time"]
    before = read_progress(target)
    if before is not None and before["checkpoint"] != checkpoint.name:
        before = None  # another config's (other code, say): this run started afresh
    if before is not None and before["samples_seen"] > seen:
        raise ValueError(f"{target} holds this run at {before['samples_seen']:,} samples, further "
                         f"than {checkpoint} ({seen:,}): not replaced")
    start, hours_before = (before["samples_seen"], before["training_hours"]) if before else (0, 0.0)
    progress = {
        "run": name, "checkpoint": checkpoint.name, "code_hash": training_code_hash(source),
        "samples_seen": seen, "samples": run_params(source).get("parameters", {}).get("samples"),
        "training_hours": round(seconds / 3600, 2),
        "samples_per_second": rounded(steady_rate(state["history"])),
        "segments": joined(before["segments"] if before else [],
                           segment(source, start, seen, seconds / 3600 - hours_before)),
    }
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("checkpoint-*.pt"):
        if old.name != checkpoint.name:
            old.unlink()
    data = checkpoint.read_bytes()
    atomic_write(target / checkpoint.name, lambda f: f.write(data))
    atomic_write_text(target / PROGRESS, json.dumps(progress, indent=2, sort_keys=True) + "\n")
    return target, progress


def restore(runs_dir, names=None, parked=UNFINISHED):
    """Copy the parked checkpoints (of `names`, or all) into runs_dir, where make's next call on
    each run goes on from it; return {name: what was done}. One made by other training code than
    this checkout's is not copied (make would start that run afresh), nor one behind the run's
    own checkpoint in runs_dir, nor one of a run finished there."""
    from aevb.runs import code_hash
    here = code_hash()
    done = {}
    for file in sorted(Path(parked).glob(f"*/*/{PROGRESS}")):
        progress = json.loads(file.read_text())
        name = progress["run"]
        if names and name not in names:
            continue
        target = Path(runs_dir) / name
        existing = checkpoint_of(target)
        if progress["code_hash"] != here:
            commit = progress["segments"][-1]["commit"]
            newest = newest_commit_with_code(commit)
            done[name] = (f"not restored: parked by training code {progress['code_hash']} (commit "
                          f"{(commit or '?')[:7]}), this checkout's is {here}; check out "
                          f"{(newest or commit or '?')[:7]} to go on"
                          + (" (the newest commit with that training code)" if newest else ""))
        elif (target / "metrics.json").exists():
            done[name] = f"not restored: {target} is finished"
        elif (existing is not None and existing.name == progress["checkpoint"]
              and checkpoint_position(existing)[0] >= progress["samples_seen"]):
            done[name] = f"not restored: {existing} is as far or further"
        else:
            data = (file.parent / progress["checkpoint"]).read_bytes()
            atomic_write(target / progress["checkpoint"], lambda f: f.write(data))
            done[name] = f"restored at {progress['samples_seen']:,} samples into {target}"
    missing = sorted(set(names or ()) - set(done))
    if missing:
        raise FileNotFoundError(f"nothing parked in {parked} for {', '.join(missing)}")
    return done


def remove_parked(folder, root):
    """Remove a parked run's folder and the folders above it (up to root) it leaves empty."""
    for file in Path(folder).iterdir():
        file.unlink()
    folder = Path(folder)
    while folder != Path(root) and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def status(parked=UNFINISHED):
    """A line per parked run: how far it has come, what is left at its steady rate (`steady_rate`;
    else its samples over its training hours, pauses included), and whether this checkout's code
    goes on from it."""
    from aevb.runs import code_hash
    here, lines = code_hash(), []
    for file in sorted(Path(parked).glob(f"*/*/{PROGRESS}")):
        p = json.loads(file.read_text())
        rate, which = p.get("samples_per_second"), "steady rate"
        if not rate and p["training_hours"]:
            rate, which = p["samples_seen"] / (p["training_hours"] * 3600), "rate so far"
        left = (f"about {(p['samples'] - p['samples_seen']) / rate / 3600:.1f} h left at its "
                f"{which} ({rate:,.0f} samples/s)" if rate and p["samples"] else "rate unknown")
        machines = "; ".join(dict.fromkeys(s["machine"] for s in p["segments"]))
        resumable = ("this checkout goes on from it" if p["code_hash"] == here else
                     f"made by training code {p['code_hash']}, not this checkout's ({here})")
        total = f" of {p['samples']:,}" if p["samples"] else ""
        lines.append(f"{p['run']}: {p['samples_seen']:,}{total} samples in "
                     f"{p['training_hours']:.1f} h ({machines}); {left}; {resumable}")
    return lines


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
    par = sub.add_parser("park", help="copy unfinished runs' checkpoints into the repository")
    par.add_argument("runs_dir", type=Path)
    par.add_argument("names", nargs="+", help="<dataset>/<run>, as the grid names it")
    res = sub.add_parser("restore", help="copy parked checkpoints into a runs folder, to go on")
    res.add_argument("runs_dir", type=Path)
    res.add_argument("names", nargs="*", help="<dataset>/<run> (none: every parked run)")
    sub.add_parser("status", help="how far each parked run has come")
    args = parser.parse_args(argv)
    try:
        if args.command == "publish":
            for name in args.names:
                print(publish(args.runs_dir, name, args.dest))
        elif args.command == "park":
            for name in args.names:
                folder, progress = park(args.runs_dir, name, UNFINISHED)
                print(f"{folder}: {progress['samples_seen']:,} samples, "
                      f"{progress['training_hours']:.2f} h")
        elif args.command == "restore":
            done = restore(args.runs_dir, args.names, UNFINISHED)
            for name, what in done.items():
                print(f"{name}: {what}")
            if any(what.startswith("not restored: parked by") for what in done.values()):
                sys.exit(1)
        else:
            print("\n".join(status(UNFINISHED)) or f"no run is parked in {UNFINISHED}")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
