"""Where `make paper` stands: what it will cost before it starts, and a line per finished step with
the time left.

    python -m aevb.progress plan --profile P --runs DIR --figures DIR --build DIR --jobs N \
        --threads T ...
    python -m aevb.progress run STEP --log FILE --notebook FILE -- COMMAND...
        (a step: a run or a figure notebook)
    python -m aevb.progress done STEP [--run-dir DIR]
    python -m aevb.progress probe        (with PyTorch: the rates `plan` needs, as JSON)

`plan` says which runs make will train and which it reuses, which figure notebooks it will run, and
an estimate of the time on this machine at this -j: each run's cost from its budget (training
samples, step-size trials, evaluations and estimates, each counted in floating-point operations of
its model) at rates measured here by a seconds-long `probe` (training throughput, the cost of a
minibatch step, and a notebook's start-up), with the steps scheduled on N jobs. It writes the plan
to BUILD/progress/plan.json (not with --dry-run: `make -n`). `run` executes a step's command with
its output in a log file (the terminal stays short) and, when it fails, shows the log's last lines
and the executed notebook's path; `done` prints "k of n done, elapsed, about T left", where T
rescales the remaining estimates by the ratio of measured to estimated times of the steps finished
so far. Each event is appended to BUILD/progress/ledger.jsonl under a lock, so steps that finish at
once under make -jN count once each.

Standard library only (PyTorch only in `probe`), so that make can call it before the environment
exists.
"""
import argparse
import heapq
import json
import os
import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from aevb import grid, paths
from aevb.declared import MCEM_LEAPFROG, algorithm, dataset, run_parameters
from aevb.files import exclusive_lock

# Sizes the budgets leave implicit (aevb/data.py): the training and test points of each data set
# vae_core.train's eval_size: the training bound is on the first 10,000 points
EVAL_TRAIN_POINTS = 10_000
# Gradient evaluations of one HMC chain of the estimators (aevb/estimators.py): App. D's 100 burn-in
# and 50 kept transitions of 4 leapfrog steps, each step one gradient, plus one per transition; the
# MCEM proposal's 4 chains of 100 + 25 transitions of 10 leapfrog steps
APPD_GRADIENTS = (100 + 50) * (4 + 1)
HMC_PROPOSAL_GRADIENTS = (100 + 25) * (10 + 1)  # its chains run side by side


def forward_flops(sizes):
    """Floating-point operations of one datapoint through the linear layers `sizes` (a multiply-add
    is 2)."""
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def network_flops(p):
    """(encoder, decoder): forward floating-point operations per datapoint of the run's model."""
    declared = dataset(p["dataset"])
    x_dim, z_dim, hidden = declared.x_dim, p["latent_dim"], list(p["hidden"])
    # a Gaussian decoder's output: its mean and its log-variance
    x_out = x_dim if declared.likelihood == "bernoulli" else 2 * x_dim
    return (forward_flops([x_dim, *hidden, 2 * z_dim]),
            forward_flops([z_dim, *hidden[::-1], x_out]))


def training_flops_per_sample(params):
    """Floating-point operations of one training sample: the algorithm's forward passes of the
    encoder and of the decoder (aevb/declared.py), the decoder's once per posterior sample k, and
    MCEM's M-step updates."""
    p = {**NOTEBOOK_DEFAULTS, **params}
    encoder, decoder = network_flops(p)
    declared = algorithm(p["algorithm"])
    mcem = p["algorithm"] == "mcem"
    k = 1 if mcem else p["n_samples"]  # MCEM's chains: one sample per datapoint
    m_steps = 3 * decoder * p["mcem_updates"] if mcem else 0
    return declared.encoder_passes * encoder + declared.decoder_passes * k * decoder + m_steps


def run_cost(params):
    """A run's work from its notebook parameters (grid.Run.params): {"flops", "steps", "gradients"}:
    the floating-point operations of its training, evaluations and estimates, its optimizer steps,
    and the sequential HMC gradient evaluations of MCEM and of the estimators (each of these has a
    fixed cost on top of its arithmetic, which dominates where batches are small)."""
    p = {**NOTEBOOK_DEFAULTS, **params}
    encoder, decoder = network_flops(p)
    n_train = p["train_size"] or dataset(p["dataset"]).train_points[p["binarize"]]
    n_test = p["test_size"] or dataset(p["dataset"]).test_points
    batch = p["batch_size"] or n_train  # 0: the whole training set (batch MCEM)
    algorithm = p["algorithm"]
    # with Kingma's step-size trial
    samples = p["samples"] + len(p["lr_choices"]) * p["lr_trial_samples"]
    flops = samples * training_flops_per_sample(p)
    updates = p["mcem_updates"] if algorithm == "mcem" else 1
    steps, gradients = samples / batch * updates, samples / batch * (MCEM_LEAPFROG
                                                                     + 1) * (algorithm == "mcem")

    rows = p["eval_points"] + 1  # log-spaced points, and the last epoch's end
    if algorithm != "mcem":
        flops += rows * (min(n_train, EVAL_TRAIN_POINTS) + n_test) * (encoder + decoder)
    # at each row, App. D's estimator and importance sampling on the first points of each set
    if p["log_px_points"]:
        chain = APPD_GRADIENTS + (HMC_PROPOSAL_GRADIENTS if algorithm == "mcem" else 0)
        flops += rows * 2 * p["log_px_points"] * (3 * decoder * chain + p["log_px_k"] * decoder)
        gradients += rows * 2 * chain
    is_points = min(p["is_points"], n_test)
    flops += is_points * (p["is_k"] * decoder + encoder)
    # a new encoder trained on the frozen decoder, then importance sampling again
    if p["refit_samples"]:
        flops += p["refit_samples"] * 3 * (encoder + decoder) + is_points * p["is_k"] * decoder
        steps += p["refit_samples"] / 100
    if p["appd_points"]:
        flops += min(p["appd_points"], n_test) * 3 * decoder * APPD_GRADIENTS
        gradients += APPD_GRADIENTS
    return {"flops": flops, "steps": steps, "gradients": gradients}


# The training notebook's defaults for what the grid's budgets leave out (its parameters cell)
NOTEBOOK_DEFAULTS = run_parameters()


def checkpoint_samples(folder):
    """The training samples seen by the checkpoint in a run folder, which make's next call on the
    run goes on from (0: none). Read with PyTorch, where it is installed (make's venv); without
    it, 0: the whole run is counted."""
    found = sorted(Path(folder).glob("checkpoint-*.pt"))
    if not found:
        return 0
    try:
        import torch  # noqa: F401
    except ImportError:
        return 0
    from aevb.paper_scale import checkpoint_position
    return checkpoint_position(found[-1])[0]


def remaining_cost(params, seen):
    """run_cost of what is left of a run whose checkpoint has seen `seen` training samples: the
    samples after it, with the step-size trial (made again on resuming) and every estimate."""
    if 0 < seen < params["samples"]:
        params = {**params, "samples": params["samples"] - seen}
    return run_cost(params)


def step_seconds(cost, rates):
    """Seconds of one run: its notebook's start-up, its steps and gradient evaluations, and its
    arithmetic, at the rates measured here."""
    return (rates["startup_s"] + cost["steps"] * rates["step_s"]
            + cost["gradients"] * rates["gradient_s"] + cost["flops"] / rates["flops_per_s"])


# ---- the plan ------------------------------------------------------------------------------------

def run_state(run, profile, runs_dir, grid_module=None):
    """'train' if make will run this run's notebook (no finished run, or its parameters or code
    changed), else 'reuse': the Makefile's rule, `metrics.json` newer than a `.params` that holds
    what the grid says."""
    from aevb.runs import code_hash
    folder = Path(runs_dir) / run.name
    metrics, params = folder / "metrics.json", Path(f"{folder}.params")
    if not metrics.exists():
        return "train"
    text = json.dumps({"parameters": run.params(profile, grid_module), "code_hash": code_hash()},
                      indent=1, sort_keys=True) + "\n"
    if not params.exists() or params.read_text() != text or params.stat().st_mtime > metrics.stat(
    ).st_mtime:
        return "train"
    return "reuse"


def figure_state(notebook, runs_to_train, profile, runs_dir, figures_dir, build_dir, figure_code,
                 grid_module=None):
    """'run' if make will execute this figure notebook (a run it reads is trained, an output is
    missing, or an input is newer than its stamp), else 'reuse'."""
    from aevb import figures
    reads = grid.notebook_runs(notebook, grid_module, profile)
    if any(r.name in runs_to_train for r in reads):
        return "run"
    stamp = Path(build_dir) / "done" / notebook
    outputs = [stamp] + [Path(figures_dir) / name for name in figures.outputs(notebook)]
    if not all(path.exists() for path in outputs):
        return "run"
    oldest = min(path.stat().st_mtime for path in outputs)
    inputs = [paths.NOTEBOOKS / f"{notebook}.ipynb", *map(Path, figure_code),
              *(Path(runs_dir) / r.name / "metrics.json" for r in reads)]
    return "run" if any(path.exists() and path.stat().st_mtime > oldest
                        for path in inputs) else "reuse"


def schedule(durations, jobs, deps=None, busy=None):
    """Seconds until `durations` (name -> seconds, in make's order) are done on `jobs` workers, each
    step started by the first free worker once the steps it depends on (deps: name -> names) are
    done. busy: name -> seconds that a step already running still needs (it holds a worker from the
    start)."""
    deps, busy = deps or {}, busy or {}
    finished = dict(busy)
    free = sorted(busy.values())[:jobs] + [0.0] * max(0, jobs - len(busy))
    heapq.heapify(free)
    for name, seconds in durations.items():
        ready = max((finished.get(d, 0.0) for d in deps.get(name, ())), default=0.0)
        start = max(heapq.heappop(free), ready)
        finished[name] = start + seconds
        heapq.heappush(free, finished[name])
    return max(finished.values(), default=0.0)


def contention(jobs, threads, cpus=None):
    """How much slower each job runs than alone: make -jN jobs of T threads on fewer cores share
    them."""
    return max(1.0, jobs * threads / (cpus or os.cpu_count() or 1))


def named_notebooks(goals, grid_module=None):
    """The figure notebooks that make's goals name by one of their targets (the stamp
    $(BUILD)/done/<notebook>, or a file it writes below the figures folder), in make's order."""
    from aevb import figures
    g = grid_module or grid
    def names(goal, notebook):
        return goal.endswith(f"/done/{notebook}") or any(
            goal.endswith(f"/{f}") for f in figures.outputs(notebook))
    return [nb for nb in g.NOTEBOOK_RUNS if any(names(goal, nb) for goal in goals)]


def make_plan(profile, runs_dir, figures_dir, build_dir, jobs, threads, rates, goals=("paper", ),
              figure_code=(), grid_module=None):
    """The steps of this make call, with their estimated seconds: {"steps": [...], "reused": [...],
    ...}. grid_module: the experiment grid (None: aevb.grid; make's GRID_FILE)."""
    g = grid_module or grid
    goals = set(goals) or {"paper"}
    all_runs = grid.runs(grid=g, profile=profile)
    everything = bool(goals & {"paper", "figures", "html", "results"})
    notebooks = list(g.NOTEBOOK_RUNS) if everything else named_notebooks(goals, g)
    if everything or "runs" in goals:
        wanted = all_runs
    else:  # single runs named by their metrics.json, and the runs of the figure notebooks named
        read = {r.name for nb in notebooks for r in grid.notebook_runs(nb, g, profile)}
        wanted = [r for r in all_runs
                  if r.name in read
                  or any(goal.endswith(f"{r.name}/metrics.json") for goal in goals)]
    states = {r.name: run_state(r, profile, runs_dir, g) for r in wanted}
    to_train = {name for name, state in states.items() if state == "train"}
    slow = contention(jobs, threads)
    steps = []
    for r in wanted:
        if r.name in to_train:
            # a run interrupted (or restored: aevb.paper_scale) goes on from its checkpoint
            seen = checkpoint_samples(Path(runs_dir) / r.name)
            cost = remaining_cost(r.params(profile, g), seen)
            steps.append({"name": r.name, "kind": "run", "cost": cost, "deps": [],
                          "resumes_at": seen,
                          "estimate_s": step_seconds(cost, rates) * slow if rates else None})
    if notebooks:
        history = load_history(build_dir)
        for notebook in notebooks:  # in make's order (`python -m aevb.grid notebooks`)
            if figure_state(notebook, to_train, profile, runs_dir, figures_dir, build_dir,
                            figure_code, g) == "run":
                name = f"notebooks/{notebook}.ipynb"
                reads = [
                    r.name for r in grid.notebook_runs(notebook, g, profile) if r.name in to_train
                ]
                # a figure notebook's cost: what it took here the last time, else twice a notebook's
                # start-up
                seconds = history.get(name) or (2 * rates["startup_s"] * slow if rates else None)
                steps.append(
                    {"name": name, "kind": "figures", "deps": reads, "estimate_s": seconds})
    total = None
    if rates and steps:
        total = schedule({s["name"]: s["estimate_s"]
                          for s in steps}, jobs, {s["name"]: s["deps"]
                                                  for s in steps})
    return {"profile": profile, "jobs": jobs, "threads": threads, "rates": rates, "steps": steps,
            "reused": sorted(set(states) - to_train), "estimate_s": total}


def duration(seconds):
    """'45 s', '3 min 05 s', '1 h 12 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plan_text(plan):
    runs = [s for s in plan["steps"] if s["kind"] == "run"]
    notebooks = [s for s in plan["steps"] if s["kind"] == "figures"]
    resumed = sum(1 for s in runs if s.get("resumes_at"))
    text = (
        f"Plan: {len(runs)} run(s) to train"
        f"{f' ({resumed} from a checkpoint)' if resumed else ''}, "
        f"{len(plan['reused'])} finished run(s) reused, "
        f"{len(notebooks)} figure notebook(s) to run ({plan['profile']} profile, -j{plan['jobs']}, "
        f"{plan['threads']} thread(s) a job)")
    if not plan["steps"]:
        return text + "; nothing to train or run."
    rates = plan["rates"]
    if not rates:
        gflop = sum(s["cost"]["flops"] for s in runs) / 1e9
        return (
            text +
            f"; {gflop:,.0f} GFLOP of training and estimates. No rate measured yet (the environment"
            " is not set up): the time estimate comes when make starts.")
    sample = rates["aevb_samples_per_s"]
    return (
        text +
        f". Estimated time here: about {duration(plan['estimate_s'])}, from each run's budget at "
        "the "
        f"rates measured here just now ({rates['flops_per_s'] / 1e9:.1f} GFLOP/s in training, "
        f"{sample:,.0f} samples/s for AEVB on 784-500-20, {rates['startup_s']:.1f} s to start a "
        "notebook)."
    )


# ---- the probe -----------------------------------------------------------------------------------

def probe(seconds=1.5):
    """Rates measured here, at this process's threads (OMP_NUM_THREADS): a notebook's start-up (the
    imports of run_notebook.py, of the kernel and of the training notebook, PyTorch's compiler among
    them: it loads with the first optimizer; and a figure drawn), then AEVB on 784-500-20 at
    minibatch 100 and 10, for about `seconds` each, to separate the arithmetic rate from the fixed
    cost of a step."""
    start = time.perf_counter()
    sys.modules.setdefault("rfc3987_syntax", None)  # as scripts/run_notebook.py
    import io

    import ipykernel.ipkernel  # noqa: F401
    import matplotlib.pyplot as plt
    import papermill  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401

    import aevb.experiment  # noqa: F401
    import vae_core as vc
    fig, axes = plt.subplots(1, 2)  # a notebook's figures, drawn as the kernel sends them
    axes[0].plot(range(10))
    axes[1].imshow(torch.rand(28, 28).numpy())
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    startup = time.perf_counter() - start
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    if threads:
        torch.set_num_threads(threads)
    x = torch.rand(2000, 784)
    per_sample = training_flops_per_sample(
        {"dataset": "mnist", "algorithm": "aevb", "latent_dim": 20})
    timings = {}
    for batch in (100, 10):
        model = vc.VAE(784, 20, [500])
        n = batch * 20
        vc.train(model, x, "aevb", samples=n, batch_size=batch, device="cpu")  # warm up
        while True:
            t = time.perf_counter()
            vc.train(model, x, "aevb", samples=n, batch_size=batch, device="cpu")
            elapsed = time.perf_counter() - t
            if elapsed > seconds / 4 or n > 10**6:
                break
            n *= 4
        timings[batch] = (n, elapsed)
    # t = steps * step_s + flops / rate, at two minibatch sizes
    (n1, t1), (n2, t2) = timings[100], timings[10]
    a = [[n1 / 100, n1 * per_sample], [n2 / 10, n2 * per_sample]]
    det = a[0][0] * a[1][1] - a[0][1] * a[1][0]
    step_s = (t1 * a[1][1] - t2 * a[0][1]) / det
    inverse_rate = (a[0][0] * t2 - a[1][0] * t1) / det
    if step_s <= 0 or inverse_rate <= 0:  # noise: all arithmetic at batch 100
        step_s, inverse_rate = 0.0, t1 / (n1 * per_sample)
    # an HMC gradient evaluation on a few points (App. D's estimator on a smoke run's 10 points)
    model = vc.VAE(784, 3, [100])
    log_joint = lambda z: model.log_px_given_z(x[:10], model.decode(z)) + vc.log_standard_normal(
        z)  # noqa: E731
    n, t = 100, time.perf_counter()
    vc.hmc(log_joint, torch.zeros(10, 3), 0.1, n_transitions=n // 5, n_leapfrog=4)
    gradient_s = (time.perf_counter() - t) / n
    return {
        "startup_s": startup, "step_s": step_s, "gradient_s": gradient_s,
        "flops_per_s": 1 / inverse_rate, "aevb_samples_per_s": n1 / t1,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "probe_s": time.perf_counter() - start
    }


def measure_rates(python, threads):
    """`probe` in a fresh process of `python` (the project's environment) with `threads` threads, or
    None."""
    if not python or not Path(python).exists():
        return None
    env = {
        **os.environ, "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(Path(__file__).parent.parent) + os.pathsep
        + os.environ.get("PYTHONPATH", "")
    }
    result = subprocess.run([python, "-m", "aevb.progress", "probe"], capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        print(
            f"aevb.progress: the rate probe failed, so no time estimate:\n{result.stderr[-2000:]}",
            file=sys.stderr)
        return None
    return json.loads(result.stdout.splitlines()[-1])


# ---- the ledger: each step's start and end, appended under a lock --------------------------------

def state_dir(build_dir):
    return Path(build_dir) / "progress"


@contextmanager
def locked(build_dir):
    folder = state_dir(build_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / ".lock"):
        yield folder


def write_plan(build_dir, plan):
    from aevb.files import atomic_write_text
    with locked(build_dir) as folder:
        atomic_write_text(folder / "plan.json", json.dumps(plan, indent=1) + "\n")
        atomic_write_text(folder / "ledger.jsonl", "")  # a new make call starts a new ledger


def record(build_dir, step, event, started=None, **extra):
    """Append an event to the ledger; return (the plan of the make call that started at `started`,
    or None, and every event so far including this one)."""
    with locked(build_dir) as folder:
        with open(folder / "ledger.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "event": event, "t": time.time(), **extra}) + "\n")
        plan = json.loads(
            (folder / "plan.json").read_text()) if (folder / "plan.json").exists() else None
        if plan is not None and plan["started"] != started:
            plan = None  # an earlier call's plan: this call planned nothing (or was not planned)
        events = [
            json.loads(line) for line in (folder / "ledger.jsonl").read_text().splitlines() if line
        ]
        if event == "done":
            save_history(folder, events)
    return plan, events


def load_history(build_dir):
    path = state_dir(build_dir) / "history.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_history(folder, events):
    """Each step's last measured seconds, which the next plan uses for the figure notebooks."""
    from aevb.files import atomic_write_text
    path = folder / "history.json"
    history = json.loads(path.read_text()) if path.exists() else {}
    history.update(measured(events))
    atomic_write_text(path, json.dumps(history, indent=1, sort_keys=True) + "\n")


def measured(events):
    """Seconds each finished step took: its `done` less its `start`."""
    starts = {e["step"]: e["t"] for e in events if e["event"] == "start"}
    return {
        e["step"]: e["t"] - starts[e["step"]]
        for e in events if e["event"] == "done" and e["step"] in starts
    }


def progress(plan, events, now):
    """(k, n, elapsed, seconds left or None) of a plan after these ledger events."""
    steps = {s["name"]: s for s in plan["steps"]}
    took = {name: t for name, t in measured(events).items() if name in steps}
    k, n = len(took), len(steps)
    elapsed = now - plan["started"]
    known = [name for name in took if steps[name]["estimate_s"]]
    if plan.get("estimate_s") is None or not all(s["estimate_s"] for s in steps.values()):
        return k, n, elapsed, None
    # the measured steps' time over their estimate rescales every estimate still to come
    ratio = (sum(took[name] for name in known) / sum(steps[name]["estimate_s"]
                                                     for name in known)) if known else 1.0
    starts = {e["step"]: e["t"] for e in events if e["event"] == "start"}
    running = [name for name in starts if name in steps and name not in took]
    busy = {
        name: max(1.0, steps[name]["estimate_s"] * ratio - (now - starts[name]))
        for name in running
    }
    pending = {
        name: s["estimate_s"] * ratio
        for name, s in steps.items() if name not in took and name not in starts
    }
    left = schedule(pending, plan["jobs"], {name: s["deps"] for name, s in steps.items()}, busy)
    return k, n, elapsed, left


def progress_line(plan, events, step, how, now=None):
    now = time.time() if now is None else now
    took = measured(events).get(step)
    what = f"{how} {step}" + (f" in {duration(took)}" if took is not None else "")
    if plan is None or step not in {s["name"] for s in plan["steps"]}:
        return f"done: {what}"
    k, n, elapsed, left = progress(plan, events, now)
    tail = "" if left is None else (", about " + duration(left) + " left" if k < n else "")
    return f"{k} of {n} done ({100 * k // max(n, 1)}%), {duration(elapsed)} elapsed{tail}: {what}"


# ---- make's steps --------------------------------------------------------------------------------

def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return list(deque(f, maxlen=lines))
    except OSError:
        return []


def run_step(build_dir, step, log, notebook, command, started=None):
    """Run `command` with its output in `log`; on failure print the log's last lines and the
    notebook's path."""
    record(build_dir, step, "start", started)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(command) + "\n")
        f.flush()
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        record(build_dir, step, "failed", started, code=code)
        shown = "".join("    " + line for line in tail(log))
        print(
            f"FAILED: {step} (exit status {code}). The last lines of its log:\n{shown}"
            f"  the executed notebook: {notebook}\n  its whole log: {log}", file=sys.stderr,
            flush=True)
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build",
                        help="the build folder; its progress/ holds the plan and the ledger")
    parser.add_argument("--started", type=float,
                        help="when make started (epoch seconds): it names the make call")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan",
                       help="print (and write) what this make call will do and its estimated time")
    for name in ("profile", "runs", "figures"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--goals", default="paper", help="make's goals (MAKECMDGOALS)")
    p.add_argument("--python", help="the project's Python, for the rate probe")
    p.add_argument("--figure-code", default="", help="the files every figure notebook depends on")
    p.add_argument("--grid", help="a grid file other than aevb/grid.py (make's GRID_FILE)")
    p.add_argument("--dry-run", action="store_true", help="print only (make -n)")
    r = sub.add_parser("run", help="run a step's command with its output in a log")
    r.add_argument("step")
    r.add_argument("--log", required=True)
    r.add_argument("--notebook", required=True)
    d = sub.add_parser("done", help="record a finished step and print the progress line")
    d.add_argument("step")
    d.add_argument("--run-dir",
                   help="a run's folder: 'trained' if its model is newer than the step's start")
    sub.add_parser("probe", help="measure the rates (needs PyTorch); print them as JSON")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []  # run's command, after --
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.command != "probe" and not args.build:
        parser.error(f"{args.command} needs --build")

    if args.command == "probe":
        print(json.dumps(probe()))
    elif args.command == "plan":
        base = dict(profile=args.profile, runs_dir=args.runs, figures_dir=args.figures,
                    build_dir=args.build, jobs=args.jobs, threads=args.threads,
                    goals=args.goals.split(), figure_code=args.figure_code.split(),
                    grid_module=grid.load(args.grid))
        plan = make_plan(rates=None, **base)
        if plan["steps"]:  # something to do: measure the rates here and now
            plan = make_plan(rates=measure_rates(args.python, args.threads), **base)
        plan["started"] = args.started or time.time()
        print(plan_text(plan), flush=True)
        if plan["steps"] and not args.dry_run:  # nothing to do: nothing written
            write_plan(args.build, plan)
    elif args.command == "run":
        if not command:
            parser.error("run needs a command after --")
        sys.exit(run_step(args.build, args.step, args.log, args.notebook, command, args.started))
    elif args.command == "done":
        how = "ran"
        if args.run_dir:
            started = [
                e["t"] for e in record_peek(args.build)
                if e["step"] == args.step and e["event"] == "start"
            ]
            model = Path(args.run_dir) / "model.pt"
            how = "trained" if started and model.exists() and model.stat(
            ).st_mtime >= started[-1] else "reused"
        plan, events = record(args.build, args.step, "done", args.started)
        print(progress_line(plan, events, args.step, how), flush=True)


def record_peek(build_dir):
    path = state_dir(build_dir) / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()
            if line] if path.exists() else []


if __name__ == "__main__":
    main()
