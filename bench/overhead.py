"""Where a training notebook's wall time goes outside training, before and after a change.

    python bench/overhead.py [--before REV] [--repeat 3] [--run mnist/aevb_z20_report_s1] \
        [--profile smoke]

Runs one run of the grid (by default a smoke run with every estimate) through
scripts/run_notebook.py as make does, `--repeat` times, with the code of the working tree and of the
git revision `--before` (extracted to a temporary folder), and splits each notebook's wall time from
the executed notebook's papermill timestamps: the process's start and papermill's import before the
notebook starts, the kernel's start, the import cell, the training cell, the plotting cells, the
kernel's shutdown and writing the notebook. Inside the training cell, a second process runs
train_run with each part timed (checksums, data loading, PyTorch's compiler import at the first
optimizer, training steps, evaluations, estimates, writing the run folder), and a third times the
imports one by one. It reports medians, CPU time (user + system, the notebook's process and its
kernel) beside wall time, the machine's load, and what the difference saves on the smoke and default
builds (per-notebook savings times their notebooks, over make's jobs). Writes bench/overhead.json
and bench/overhead.md. Run it on a quiet machine.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aevb import grid  # noqa: E402
from aevb.files import atomic_write_text  # noqa: E402

# Inside the training cell: run with the tree under test first on sys.path
INSIDE = r'''
import json, sys, time
t0 = time.perf_counter()
import torch
from aevb import data, experiment, estimators, runs
import vae_core as vc
imports = time.perf_counter() - t0
parts, stack = {}, []
def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter(); stack.append(0.0)
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.perf_counter() - start; inner = stack.pop()
            # exclusive of the parts timed inside it
            parts[name] = parts.get(name, 0.0) + took - inner
            if stack: stack[-1] += took
    return wrapper
data.file_sha256 = timed("checksums", data.file_sha256)
experiment.load_data = timed("data loading", experiment.load_data)
# train calls evaluate in vae_core.training
vc.training.evaluate = timed("evaluation (the history's bounds)", vc.training.evaluate)
vc.train = timed("training steps", vc.train)
for name in ("log_likelihood", "log_likelihood_refit", "log_likelihood_appendix_d",
             "log_likelihood_hmc"):
    setattr(estimators, name, timed("estimates after training", getattr(estimators, name)))
experiment.save_run = timed("writing the run folder", experiment.save_run)
experiment.prepare_run = timed("writing the run folder", experiment.prepare_run)
start = time.perf_counter()
import torch._dynamo  # what the first optimizer imports (torch.optim's Optimizer.__init__)
parts["PyTorch compiler import (first optimizer)"] = time.perf_counter() - start
params = json.loads(sys.argv[1]); run_dir = sys.argv[2]
config = experiment.RunConfig(**params)
start = time.perf_counter()
experiment.train_run(config, run_dir, replace_stale=True, progress="none", threads=1)
total = time.perf_counter() - start
timed_parts = sum(v for k, v in parts.items() if not k.startswith("PyTorch"))
parts["other (config, device, logs)"] = total - timed_parts
print(json.dumps(parts))
'''

IMPORTS = r'''
import json, sys, time
out = {}
for label, statement in json.loads(sys.argv[1]):
    start = time.perf_counter(); exec(statement); out[label] = time.perf_counter() - start
print(json.dumps(out))
'''
IMPORT_STEPS = [("torch", "import torch"), ("matplotlib.pyplot", "import matplotlib.pyplot"),
                ("aevb.experiment (scipy.stats, ...)", "import aevb.experiment"),
                ("torch._dynamo (the first optimizer)", "import torch._dynamo")]


def timestamp(text):
    return datetime.fromisoformat(text).timestamp()


def env_for(tree, threads=1):
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads),
            "VAE_DATA_DIR": os.environ.get("VAE_DATA_DIR") or str((ROOT / "data").resolve())}


def notebook_parts(tree, params_file, out_dir):
    """One notebook through the tree's run_notebook.py: the wall time of each part, and its CPU
    time."""
    out_dir.mkdir(parents=True)
    output = out_dir / "train.ipynb"
    cmd = [
        sys.executable,
        str(tree / "scripts" / "run_notebook.py"),
        str(tree / "notebooks" / "train.ipynb"),
        str(output), "--params",
        str(params_file), "-p", "run_dir",
        str(out_dir / "run"), "-p", "replace_stale", "True", "-p", "threads", "1", "-p", "progress",
        "lines"
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env_for(tree))
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    nb = json.loads(output.read_text())
    meta = nb["metadata"]["papermill"]
    cells = [c["metadata"]["papermill"] for c in nb["cells"] if c["cell_type"] == "code"]
    start, end = timestamp(meta["start_time"]), timestamp(meta["end_time"])
    spans = [(timestamp(c["start_time"]), timestamp(c["end_time"])) for c in cells]
    # the code cells: parameters, injected parameters, imports, train, then the plots (curve,
    # samples, Nz = 2 views)
    cell = lambda i: spans[i][1] - spans[i][0]  # noqa: E731
    parts = {
        "process start, papermill's import, parameters": start - spawned,
        "kernel start": spans[0][0] - start, "import cell": cell(2), "training cell": cell(3),
        "plotting cells": sum(cell(i) for i in range(4, len(spans))),
        "between cells (papermill)": (spans[-1][1] - spans[0][0])
        - sum(cell(i) for i in range(len(spans))), "kernel shutdown": end - spans[-1][1],
        "writing the notebook, exit": ended - end
    }
    parts["parameter cells"] = cell(0) + cell(1)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"parts": parts, "wall_s": ended - spawned, "cpu_s": cpu,
            "kernel_warning": "without encryption" in result.stdout + result.stderr}


def inside_parts(tree, params, out_dir):
    cmd = [sys.executable, "-c", INSIDE, json.dumps(params), str(out_dir / "inside")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env_for(tree))
    if result.returncode != 0:
        sys.exit(f"the timed train_run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def import_parts(tree):
    out = {}
    for label, statement, block in [("papermill (run_notebook.py)", "import papermill", False),
                                    ("papermill, without jsonschema's IRI grammar",
                                     "import papermill", True)]:
        prefix = "import sys; sys.modules['rfc3987_syntax'] = None\n" if block else ""
        cmd = [sys.executable, "-c", prefix + IMPORTS, json.dumps([[label, statement]])]
        out.update(json.loads(subprocess.run(cmd, capture_output=True, text=True, cwd=tree,
                                             env=env_for(tree)).stdout.splitlines()[-1]))
    cmd = [sys.executable, "-c", IMPORTS, json.dumps(IMPORT_STEPS)]
    out.update(json.loads(subprocess.run(cmd, capture_output=True, text=True, cwd=tree,
                                         env=env_for(tree)).stdout.splitlines()[-1]))
    return out


def median_parts(samples):
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def measure(tree, run, profile, repeat, work):
    params = run.params(profile)
    params_file = work / "run.params"
    params_file.write_text(json.dumps({"parameters": params}))
    notebooks = [notebook_parts(tree, params_file, work / f"nb{i}") for i in range(repeat)]
    return {
        "notebook": median_parts([n["parts"] for n in notebooks]),
        "wall_s": statistics.median(n["wall_s"] for n in notebooks),
        "cpu_s": statistics.median(n["cpu_s"] for n in notebooks),
        "kernel_warning": any(n["kernel_warning"] for n in notebooks),
        "training_cell": median_parts([
            inside_parts(tree, params, work / f"in{i}") for i in range(repeat)
        ]), "imports": median_parts([import_parts(tree) for _ in range(repeat)])
    }


def extract(rev, folder):
    """The tree of git revision `rev` in `folder` (its data folder is the project's)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def table(before, after, key, difference=True):
    rows = []
    for part in dict.fromkeys([*(before or {}).get(key, {}), *after[key]]):
        b = (before or {}).get(key, {}).get(part)
        a = after[key].get(part)
        cells = [f"{v:.2f}" if v is not None else "" for v in (b, a)]
        saved = f"{b - a:.2f}" if difference and b is not None and a is not None else ""
        rows.append(f"| {part} | {cells[0]} | {cells[1]} | {saved} |")
    return rows


def report(result):
    before, after, m = result.get("before"), result["after"], result["machine"]
    lines = [
        "# Where a training notebook's time goes outside training", "",
        f"`python bench/overhead.py` on {m['cpus']} cores, load average {m['load_before']} before "
        "and "
        f"{m['load_after']} after (a shared machine: seconds are noisy; CPU time is steadier). One "
        "run, "
        f"`{result['run']}` ({result['profile']} profile, one thread), {result['repeat']} times "
        "each, medians; "
        f"before: revision {result.get('before_rev', '-')}, after: the working tree.", "",
        "## The notebook, from its papermill timestamps (seconds)", "",
        "| part | before | after | saved |", "|---|---:|---:|---:|",
        *table(before, after, "notebook"),
        f"| **whole notebook, wall** | {before['wall_s']:.2f} | {after['wall_s']:.2f} | "
        f"{before['wall_s'] - after['wall_s']:.2f} |"
        if before else f"| **whole notebook, wall** | | {after['wall_s']:.2f} | |",
        f"| **whole notebook, CPU (user + system)** | {before['cpu_s']:.2f} | {after['cpu_s']:.2f} "
        "| "
        f"{before['cpu_s'] - after['cpu_s']:.2f} |"
        if before else f"| **whole notebook, CPU (user + system)** | | {after['cpu_s']:.2f} | |",
        "", "## Inside the training cell (train_run, timed in a process of its own, seconds)", "",
        "| part | before | after | saved |", "|---|---:|---:|---:|",
        *table(before, after, "training_cell"), "",
        "## Imports, one after another in a fresh process (seconds)", "",
        "The same imports in both trees (what changed is that run_notebook.py no longer loads the "
        "IRI "
        "grammar): the two columns show the noise.", "", "| import | before | after | |",
        "|---|---:|---:|---:|", *table(before, after, "imports", False), ""
    ]
    if before:
        lines += [
            "The kernel's transport warning: "
            f"{'printed' if before['kernel_warning'] else 'not printed'} "
            f"before, {'printed' if after['kernel_warning'] else 'not printed'} after.", ""
        ]
        lines += [
            "## What it saves on a build", "",
            "Per notebook (training or figures), the parts the change touches: "
            f"{', '.join(CHANGED)} "
            "(wall time); and the whole notebook's CPU time. The other parts' differences are "
            "noise.",
            ""
        ]
        for name, s in result["savings"].items():
            lines.append(
                f"- **{name}**: {s['notebooks']} notebooks x {s['per_notebook_s']:.1f} s = "
                f"{s['job_seconds']:.0f} job-seconds, about {s['wall_s'] / 60:.1f} min of wall "
                "time at "
                f"-j{s['jobs']} ({s['cpu_s']:.0f} s of CPU time).")
        lines.append("")
    return "\n".join(lines)


CHANGED = ("process start, papermill's import, parameters", "kernel shutdown",
           "writing the notebook, exit")


def savings(result, jobs):
    """What the change saves on the smoke and default builds: every notebook (runs and figure
    notebooks) saves the changed parts' wall time and the whole notebook's CPU time; wall time over
    make's jobs."""
    per_notebook = sum(result["before"]["notebook"][k] - result["after"]["notebook"][k]
                       for k in CHANGED)
    per_notebook_cpu = result["before"]["cpu_s"] - result["after"]["cpu_s"]
    out = {}
    for profile in ("smoke", "default"):
        n = len(grid.runs(profile=profile)) + len(grid.NOTEBOOK_RUNS)
        out[f"{profile} build ({n - len(grid.NOTEBOOK_RUNS)} runs, {len(grid.NOTEBOOK_RUNS)} "
            "figure notebooks)"] = {
            "notebooks": n, "per_notebook_s": per_notebook, "job_seconds": n * per_notebook,
            "wall_s": n * per_notebook / jobs, "jobs": jobs, "cpu_s": n * per_notebook_cpu
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before",
        help="a git revision to compare with (its code, extracted to a temporary folder)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--run", default="mnist/aevb_z20_report_s1")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--jobs", type=int, default=2, help="make's -j for the savings on a build")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "overhead.json")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from --out's measurements")
    args = parser.parse_args(argv)
    if args.report_only:
        result = json.loads(args.out.read_text())
        if "before" in result:
            result["savings"] = savings(result, args.jobs)
        atomic_write_text(args.out.with_suffix(".md"), report(result))
        print(report(result))
        return
    run = grid.run(args.run)
    load_before = os.getloadavg()
    result = {"run": args.run, "profile": args.profile, "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.before:
            (tmp / "tree").mkdir()
            tree = extract(args.before, tmp / "tree")
            (tmp / "b").mkdir()
            result["before"] = measure(tree, run, args.profile, args.repeat, tmp / "b")
            result["before_rev"] = args.before
        (tmp / "a").mkdir()
        result["after"] = measure(ROOT, run, args.profile, args.repeat, tmp / "a")
    result["machine"] = {
        "cpus": os.cpu_count(), "load_before": " ".join(f"{v:.1f}" for v in load_before),
        "load_after": " ".join(f"{v:.1f}" for v in os.getloadavg())
    }
    if args.before:
        # process-level savings apply to every notebook (runs and figures), the training cell's to
        # runs
        result["savings"] = savings(result, args.jobs)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    text = report(result)
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
