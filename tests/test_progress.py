"""What make paper says of itself (aevb/progress.py): the plan's estimate from each run's budget and the
rates measured here, the progress line's arithmetic, its count when several steps finish at once, and
quiet steps whose failures show their last lines and their executed notebook."""
import json
import os
import subprocess
import sys
import textwrap

import nbformat
import pytest

from aevb import declared, grid, progress
from aevb.runs import code_hash
from conftest import PY, ROOT
from test_experiment import notebook_defaults

RATES = {"startup_s": 5.0, "step_s": 0.002, "gradient_s": 0.0005, "flops_per_s": 20e9, "aevb_samples_per_s": 4000}
E = 2 * (784 * 500 + 500 * 40)  # 784-500-20's encoder, forward FLOPs per datapoint
D = 2 * (20 * 500 + 500 * 784)  # its decoder


def test_notebook_defaults_are_the_training_notebooks_as_papermill_reads_them():
    papermill = notebook_defaults()  # read once, stdlib only, the same values; the page's own left out
    page = {p.name for p in declared.parameters() if p.page}
    assert progress.NOTEBOOK_DEFAULTS == {k: v for k, v in papermill.items() if k not in page}
    assert page and page < set(papermill)
    assert progress.NOTEBOOK_DEFAULTS["batch_size"] == 100 and progress.NOTEBOOK_DEFAULTS["hidden"] == [500]


def test_a_runs_cost_counts_its_budget():
    run = dict(dataset="mnist", algorithm="aevb", latent_dim=20, samples=30_000, eval_points=1, train_size=1000,
               test_size=200)
    cost = progress.run_cost(run)
    # 30,000 samples forward and backward (3 forward passes), two evaluation rows on 1000 + 200 points
    assert cost["flops"] == 30_000 * 3 * (E + D) + 2 * 1200 * (E + D)
    assert cost["steps"] == 300 and cost["gradients"] == 0
    assert progress.run_cost({**run, "samples": 60_000})["flops"] - cost["flops"] == 30_000 * 3 * (E + D)
    # Kingma's step-size trial trains each candidate; IWAE's k decoder passes; wake-sleep's two phases
    trial = progress.run_cost({**run, "lr_choices": [0.01, 0.02, 0.1], "lr_trial_samples": 1000})
    assert trial["flops"] - cost["flops"] == 3000 * 3 * (E + D) and trial["steps"] == 330
    iwae = progress.run_cost({**run, "algorithm": "iwae", "n_samples": 50, "eval_points": -1})
    assert iwae["flops"] == 30_000 * 3 * (E + 50 * D)
    assert progress.run_cost({**run, "algorithm": "wake_sleep"})["flops"] > cost["flops"]
    # estimates after training: importance sampling, a refitted encoder, App. D's chains
    estimated = progress.run_cost({**run, "is_points": 20, "is_k": 100, "refit_samples": 2000, "appd_points": 10})
    assert estimated["flops"] - cost["flops"] == (20 * (100 * D + E) + 2000 * 3 * (E + D) + 20 * 100 * D
                                                  + 10 * 3 * D * progress.APPD_GRADIENTS)
    assert estimated["gradients"] == progress.APPD_GRADIENTS and estimated["steps"] == 320
    # MCEM: HMC gradients and its decoder updates per minibatch
    mcem = progress.run_cost({**run, "algorithm": "mcem", "mcem_updates": 5, "latent_dim": 3, "hidden": [100]})
    assert mcem["steps"] == 300 * 5 and mcem["gradients"] == 300 * 11
    # seconds: a notebook's start-up, its steps and gradients, its arithmetic at the measured rate
    assert progress.step_seconds(cost, RATES) == pytest.approx(5.0 + 300 * 0.002 + cost["flops"] / 20e9)


def test_every_run_of_every_profile_has_a_cost():
    for profile in grid.PROFILES:
        for r in grid.runs(profile=profile):
            cost = progress.run_cost(r.params(profile))
            assert cost["flops"] > 0 and cost["steps"] > 0, r.name


def test_schedule_fills_the_jobs_in_makes_order_and_waits_for_dependencies():
    assert progress.schedule({"a": 10, "b": 10, "c": 10}, jobs=1) == 30
    assert progress.schedule({"a": 10, "b": 10, "c": 10}, jobs=2) == 20
    assert progress.schedule({"a": 30, "b": 10, "c": 10}, jobs=2) == 30
    assert progress.schedule({"a": 10, "b": 10, "fig": 5}, jobs=4, deps={"fig": ["a", "b"]}) == 15
    assert progress.schedule({"c": 10}, jobs=2, busy={"a": 4, "b": 8}) == 14  # the first worker free at 4
    assert progress.schedule({}, jobs=2, busy={"a": 4}) == 4


def plan_of(tmp_path, profile="smoke", jobs=2, threads=1):
    return progress.make_plan(profile, tmp_path / "runs", tmp_path / "figures", tmp_path / "build", jobs, threads,
                              RATES, figure_code=[])


def test_the_plan_estimates_every_step_and_schedules_them_on_the_jobs(tmp_path):
    plan = plan_of(tmp_path)
    runs = grid.runs(profile="smoke")
    assert [s["name"] for s in plan["steps"]] == [r.name for r in runs] + [f"notebooks/{nb}.ipynb"
                                                                            for nb in grid.NOTEBOOK_RUNS]
    for step, r in zip(plan["steps"], runs):
        assert step["estimate_s"] == pytest.approx(progress.step_seconds(progress.run_cost(r.params("smoke")), RATES))
    scorecard = plan["steps"][-1]
    assert scorecard["name"] == "notebooks/scorecard.ipynb" and len(scorecard["deps"]) == len(runs)
    total = sum(s["estimate_s"] for s in plan["steps"])
    assert total / 2 <= plan["estimate_s"] < total
    assert plan_of(tmp_path, jobs=1)["estimate_s"] == pytest.approx(total)
    # four jobs of one thread on fewer cores share them: each runs slower
    crowded = plan_of(tmp_path, jobs=4, threads=1)
    cores = progress.os.cpu_count()
    if cores < 4:
        assert crowded["steps"][0]["estimate_s"] == pytest.approx(plan["steps"][0]["estimate_s"] * 4 / cores)
    text = progress.plan_text(plan)
    assert text.startswith(f"Plan: {len(runs)} run(s) to train, 0 finished run(s) reused, 6 figure notebook(s)")
    assert f"about {progress.duration(plan['estimate_s'])}" in text and "20.0 GFLOP/s" in text
    # no rate (no environment yet): counts and work, no time
    bare = progress.make_plan("smoke", tmp_path / "runs", tmp_path / "f", tmp_path / "b", 2, 1, None)
    assert bare["estimate_s"] is None and "No rate measured yet" in progress.plan_text(bare)


def test_a_figure_notebook_named_alone_plans_its_runs_and_itself(tmp_path):
    goals = [f"{tmp_path}/build/done/kingma2013"]
    plan = progress.make_plan("smoke", tmp_path / "runs", tmp_path / "figures", tmp_path / "build", 2, 1, RATES,
                              goals=goals, figure_code=[])
    reads = [r.name for r in grid.notebook_runs("kingma2013", profile="smoke")]
    assert [s["name"] for s in plan["steps"]] == reads + ["notebooks/kingma2013.ipynb"]
    by_file = progress.make_plan("smoke", tmp_path / "runs", tmp_path / "figures", tmp_path / "build", 2, 1, RATES,
                                 goals=["figures/smoke/burda_vae_iwae.png"], figure_code=[])
    assert by_file["steps"][-1]["name"] == "notebooks/burda2015.ipynb"
    assert progress.named_notebooks(["setup", "runs/smoke/mnist/aevb_z2_report_s1/metrics.json"]) == []


def finish(runs_dir, run, profile="smoke"):
    folder = run.folder(runs_dir)
    folder.mkdir(parents=True)
    params = folder.parent / f"{folder.name}.params"
    params.write_text(json.dumps({"parameters": run.params(profile), "code_hash": code_hash()}, indent=1,
                                 sort_keys=True) + "\n")
    (folder / "metrics.json").write_text("{}")
    return params


def test_the_plan_reuses_finished_runs_and_retrains_changed_ones(tmp_path):
    done, changed, *_ = grid.runs(profile="smoke")
    finish(tmp_path / "runs", done)
    finish(tmp_path / "runs", changed).write_text('{"parameters": {}}\n')  # its parameters changed since
    plan = plan_of(tmp_path)
    assert plan["reused"] == [done.name]
    names = [s["name"] for s in plan["steps"]]
    assert done.name not in names and changed.name in names
    assert "1 finished run(s) reused" in progress.plan_text(plan)


def ledger(tmp_path, steps, jobs=2, started=1000.0):
    plan = {"steps": [{"name": n, "kind": "run", "deps": [], "estimate_s": s} for n, s in steps.items()],
            "jobs": jobs, "started": started, "estimate_s": progress.schedule(steps, jobs)}
    progress.write_plan(tmp_path, plan)
    return plan


def test_the_progress_line_rescales_what_is_left_by_the_measured_rate(tmp_path):
    plan = ledger(tmp_path, {"a": 10, "b": 10, "c": 10, "d": 10})
    events = [{"step": "a", "event": "start", "t": 1000}, {"step": "b", "event": "start", "t": 1000},
              {"step": "a", "event": "done", "t": 1020}]
    # a took 20 s for 10 estimated: everything left takes twice its estimate. b (running for 20 s) needs
    # about 0 s more (at least 1), c and d 20 s each on the two jobs: c from 0 to 20, d from 1 to 21
    assert progress.progress(plan, events, now=1020) == (1, 4, 20, 21)
    line = progress.progress_line(plan, events, "a", "trained", now=1020)
    assert line == "1 of 4 done (25%), 20 s elapsed, about 21 s left: trained a in 20 s"
    events += [{"step": s, "event": e, "t": 1030} for s in "bcd" for e in ("start", "done") if s != "b" or e == "done"]
    assert progress.progress_line(plan, events, "d", "trained", now=1030) == \
        "4 of 4 done (100%), 30 s elapsed: trained d in 0 s"
    # a step of another make call (no plan of its own) says only what it did
    assert progress.progress_line(None, events, "d", "trained") == "done: trained d in 0 s"
    assert progress.duration(3725) == "1 h 02 min" and progress.duration(185) == "3 min 05 s"


def test_steps_finishing_at_once_count_once_each(tmp_path):
    """Several processes record their step's end at the same moment (make -j8): each k from 1 to n once."""
    n = 8
    ledger(tmp_path, {f"run{i}": 10 for i in range(n)}, jobs=n, started=1000.0)
    for i in range(n):
        progress.record(tmp_path, f"run{i}", "start", 1000.0)
    cmd = lambda i: [sys.executable, "-m", "aevb.progress", "--build", str(tmp_path), "--started", "1000", "done",
                     f"run{i}"]
    procs = [subprocess.Popen(cmd(i), stdout=subprocess.PIPE, text=True, cwd=ROOT) for i in range(n)]
    lines = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    counts = sorted(int(line.split(" of ")[0]) for line in lines)
    assert counts == list(range(1, n + 1)), lines
    assert all(f" of {n} done" in line for line in lines)
    events = [json.loads(x) for x in (tmp_path / "progress" / "ledger.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "done" for e in events) == n
    assert set(json.loads((tmp_path / "progress" / "history.json").read_text())) == {f"run{i}" for i in range(n)}


def test_a_failing_step_shows_its_last_lines_and_its_notebook(tmp_path):
    script = "import sys\nfor i in range(50): print(f'line {i}')\nsys.exit('the cell failed')"
    cmd = [sys.executable, "-m", "aevb.progress", "--build", str(tmp_path), "run", "mnist/x", "--log",
           str(tmp_path / "x.log"), "--notebook", str(tmp_path / "x.ipynb"), "--", sys.executable, "-c", script]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and result.stdout == ""
    assert "FAILED: mnist/x" in result.stderr and "line 49" in result.stderr and "the cell failed" in result.stderr
    assert "line 10" not in result.stderr  # the last lines only
    assert f"the executed notebook: {tmp_path / 'x.ipynb'}" in result.stderr and str(tmp_path / "x.log") in result.stderr
    log = (tmp_path / "x.log").read_text()
    assert "line 0\n" in log and "line 49\n" in log  # the whole output is in the log


def tiny_notebook(path, code):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("fail = False", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "aevb", "display_name": "Python (aevb)", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_notebook_runs_without_the_kernels_transport_warning(tmp_path):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb", "print('hello')\nassert not fail, 'asked to fail'")
    cmd = [PY, str(ROOT / "scripts" / "run_notebook.py"), str(notebook), str(tmp_path / "out.ipynb")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "hello" in output
    for noise in ("without encryption", "KeyboardInterrupt", "WARNING"):
        assert noise not in output, output
    # through make's step: a failing notebook shows its error and where its executed notebook is
    out = tmp_path / "failed.ipynb"
    step = [PY, "-m", "aevb.progress", "--build", str(tmp_path), "run", "notebooks/tiny.ipynb", "--log",
            str(tmp_path / "failed.log"), "--notebook", str(out), "--", *cmd[:2], str(notebook), str(out),
            "-p", "fail", "True"]
    result = subprocess.run(step, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "FAILED: notebooks/tiny.ipynb" in result.stderr
    assert "AssertionError: asked to fail" in result.stderr and f"the executed notebook: {out}" in result.stderr
    assert out.exists() and "without encryption" not in (tmp_path / "failed.log").read_text()


@pytest.mark.slow
def test_make_prints_the_plan_and_a_progress_line_per_step(tmp_path):
    """A tiny grid through make -j2: the plan before the steps, one line per step, nothing else per run."""
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(textwrap.dedent("""
        PROFILES = ("smoke",)
        PROTOCOLS = {("mnist", "tiny"): dict(hidden=[20], lr=0.001)}
        BUDGETS = {"smoke": {("mnist", "tiny"): dict(samples=200, train_size=200, test_size=100, eval_points=1),
                             "estimates": {}}}
        RUNS = [dict(dataset="mnist", protocol="tiny", algorithms=["aevb"], latent_dims=[2], seeds=[1, 2])]
        NOTEBOOK_RUNS = {}
        """))
    cmd = ["make", "-C", str(ROOT), "-j2", "runs", "PROFILE=smoke", f"GRID_FILE={grid_file}", f"RUNS={tmp_path}/runs",
           f"BUILD={tmp_path}/build", f"FIGURES={tmp_path}/figures", f"VENV={os.path.realpath(ROOT / '.venv')}",
           "--no-print-directory"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # besides setup's and data's lines (make data: "data ready ..."), the plan, then one line per step
    lines = [line for line in result.stdout.splitlines() if "fetch_data.py" not in line
             and not line.startswith(("data ready", "Installed kernelspec", "git filter nbstripout set"))]
    assert lines[0].startswith("Plan: 2 run(s) to train, 0 finished run(s) reused") and "Estimated time here" in lines[0]
    steps = sorted(lines[1:])
    assert len(steps) == 2 and [s.split(" (")[0] for s in steps] == ["1 of 2 done", "2 of 2 done"], lines
    assert {s.split(": trained ")[1].split(" in ")[0] for s in steps} == {"mnist/aevb_z2_tiny_s1", "mnist/aevb_z2_tiny_s2"}
    assert "without encryption" not in result.stdout + result.stderr
    log = (tmp_path / "build/notebooks/train_mnist_aevb_z2_tiny_s1.log").read_text()
    assert "mnist: 200 training and 100 test points" in log  # the run's own lines are in its log
    again = subprocess.run(cmd, capture_output=True, text=True)  # nothing to do: the plan says so, nothing runs
    assert "Plan: 0 run(s) to train, 2 finished run(s) reused" in again.stdout and " done" not in again.stdout


def test_a_run_that_goes_on_from_its_checkpoint_is_planned_for_what_is_left(tmp_path):
    """A run interrupted (or restored from results/unfinished) goes on from its checkpoint: the plan counts the
    samples after it, the step-size trial and every estimate, and says how many runs resume."""
    import torch
    full = plan_of(tmp_path)
    run = grid.runs(profile="smoke")[0]
    params = run.params("smoke")
    folder = run.folder(tmp_path / "runs")
    folder.mkdir(parents=True)
    torch.save({"samples_seen": params["samples"] // 2, "wall_time": 60.0}, folder / "checkpoint-0123456789ab.pt")
    plan = plan_of(tmp_path)
    [step] = [s for s in plan["steps"] if s["name"] == run.name]
    [before] = [s for s in full["steps"] if s["name"] == run.name]
    assert step["resumes_at"] == params["samples"] // 2 and before["resumes_at"] == 0
    left = progress.run_cost({**params, "samples": params["samples"] - params["samples"] // 2})
    assert step["cost"] == left and left["flops"] < before["cost"]["flops"]
    assert step["estimate_s"] == pytest.approx(progress.step_seconds(left, RATES))
    assert "run(s) to train (1 from a checkpoint)," in progress.plan_text(plan)
    assert "from a checkpoint" not in progress.plan_text(full)
