"""The experiment grid: the one list of runs, what make and the notebooks ask of it, and that make
trains exactly what the grid adds or changes and writes nothing when asked what it would do."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from aevb import grid
from aevb.experiment import RunConfig
from conftest import ROOT
from test_experiment import notebook_defaults


def test_run_names_are_unique_and_say_what_the_run_is():
    runs = grid.runs()
    assert len({r.name for r in runs}) == len(runs) > 0
    for r in runs:
        assert re.fullmatch(rf"{r.dataset}/{r.algorithm}_z{r.latent_dim}_{r.protocol}_s{r.seed}", r.name)
        assert grid.run(r.name) == r
    with pytest.raises(KeyError, match="not a run of the experiment grid"):
        grid.run("mnist/aevb_z7_nothing_s1")


@pytest.mark.parametrize("profile", grid.PROFILES)
def test_every_run_is_a_valid_training_config_in_every_profile(profile):
    defaults = notebook_defaults()
    for r in grid.runs():
        params = r.params(profile)
        assert set(params) <= set(defaults), set(params) - set(defaults)  # only the notebook's own parameters
        config = RunConfig.from_namespace({**defaults, **params})
        assert (config.dataset, config.algorithm, config.latent_dim, config.protocol, config.seed) == \
               (r.dataset, r.algorithm, r.latent_dim, r.protocol, r.seed)
        assert (config.is_points > 0) == (r.estimates or r.protocol.startswith("burda"))
    with pytest.raises(ValueError, match="profile 'huge' is not known"):
        grid.runs()[0].params("huge")


def test_queries_select_by_any_field():
    table1 = grid.runs(protocol="report", latent_dim=20)
    assert {(r.algorithm, r.seed) for r in table1} == {(a, s) for a in ("aevb", "wake_sleep") for s in (1, 2, 3)}
    assert grid.select("dataset=mnist algorithm=aevb,wake_sleep latent_dim=20", "report") == table1
    assert grid.select("dataset=mnist algorithm=aevb", "report") == grid.runs(protocol="report", algorithm="aevb")
    assert grid.latent_dims(protocol="report", algorithm="aevb") == sorted({r.latent_dim for r in grid.runs(
        protocol="report", algorithm="aevb")})
    with pytest.raises(ValueError, match="is not field=value"):
        grid.select("mnist aevb")
    figure_runs = {r for notebook in grid.NOTEBOOK_RUNS for r in grid.notebook_runs(notebook)}
    assert figure_runs == set(grid.runs())  # every run is read by some figure notebook
    from aevb.figures import notebooks
    assert sorted(grid.NOTEBOOK_RUNS) == sorted(notebooks())  # the notebooks make reads are those that draw


def make(*args, tmp_path):
    cmd = ["make", "-C", str(ROOT), *args, f"RUNS={tmp_path}/runs", f"BUILD={tmp_path}/build",
           f"FIGURES={tmp_path}/figures"]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_make_dry_run_names_every_run_and_writes_nothing(tmp_path):
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True, text=True).stdout
    result = make("-n", "paper", "PROFILE=smoke", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for r in grid.runs(profile="smoke"):
        assert f"-p run_dir {tmp_path}/runs/{r.name} " in result.stdout, r.name
    assert result.stdout.count("notebooks/train.ipynb") == len(grid.runs(profile="smoke")) < len(grid.runs())
    assert not list(tmp_path.iterdir())  # no params file, no run folder, nothing
    assert subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True,
                          text=True).stdout == status


def test_unknown_profile_is_refused_by_make(tmp_path):
    result = make("-n", "paper", "PROFILE=huge", tmp_path=tmp_path)
    assert result.returncode != 0 and "PROFILE=huge is not known" in result.stderr


TINY_GRID = """
PROFILES = ("smoke",)
PROTOCOLS = {{("mnist", "tiny"): dict(binarize="none", hidden=[20], optimizer="adam", lr=0.001, weight_prior=False)}}
BUDGETS = {{"smoke": {{("mnist", "tiny"): dict(samples={samples}, train_size=1000, test_size=200, eval_points=2,
                                             checkpoint_every=1000), "estimates": {{}}}}}}
RUNS = [dict(dataset="mnist", protocol="tiny", algorithms=["aevb"], latent_dims=[2], seeds={seeds})]
NOTEBOOK_RUNS = {{}}
"""


@pytest.mark.slow
def test_make_trains_exactly_what_the_grid_adds_or_changes(tmp_path):
    grid_file = tmp_path / "grid.py"
    # a stand-in for a scheduler's launcher (srun, qsub -sync y, ...): it logs the job, then runs it
    launcher = tmp_path / "launch"
    launcher.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/jobs.log\nexec "$@"\n')
    launcher.chmod(0o755)
    def make_runs(samples, seeds):
        grid_file.write_text(textwrap.dedent(TINY_GRID.format(samples=samples, seeds=seeds)))
        result = make("-j2", "runs", "PROFILE=smoke", f"GRID_FILE={grid_file}", f"LAUNCH={launcher}", tmp_path=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        # a progress line per trained run; each run's own lines are in its log beside its notebook
        logs = "".join(path.read_text() for path in (tmp_path / "build" / "notebooks").glob("train_*.log"))
        return re.findall(r"trained mnist/(aevb_z2_tiny_s\d) in", result.stdout), logs
    metrics = lambda seed: (tmp_path / f"runs/mnist/aevb_z2_tiny_s{seed}/metrics.json")

    assert make_runs(2000, [1])[0] == ["aevb_z2_tiny_s1"]
    first = metrics(1).read_text()
    assert make_runs(2000, [1])[0] == []  # finished and unchanged: no work at all
    assert metrics(1).read_text() == first
    assert make_runs(2000, [1, 2])[0] == ["aevb_z2_tiny_s2"]  # a seed added: only the new run trains
    trained, log = make_runs(3000, [1, 2])  # a budget changed: both runs are retrained
    assert sorted(trained) == ["aevb_z2_tiny_s1", "aevb_z2_tiny_s2"] and log.count("retraining it") == 2
    assert '"samples": 3000' in metrics(1).read_text()
    jobs = (tmp_path / "jobs.log").read_text().splitlines()  # one job per training, through the launcher
    assert len(jobs) == 4 and all("scripts/run_notebook.py notebooks/train.ipynb" in job for job in jobs)


@pytest.mark.parametrize("profile", grid.PROFILES)
def test_every_run_and_every_step_size_trial_updates_its_parameters(profile):
    """A run whose budget ends within its optimizer's warm-up (minibatches that only feed Adagrad's
    statistics) never moves a parameter: its curves, trial scores and metrics would be those of the
    initialization. Every run must make more minibatch steps than its warm-up, and so must each
    candidate of its step-size trial."""
    defaults = notebook_defaults()
    frozen = []
    for r in grid.runs(profile=profile):
        config = RunConfig.from_namespace({**defaults, **r.params(profile)})
        batch = config.batch_size or config.train_size or 60_000  # 0: the whole training set (batch MCEM)
        steps = config.samples // batch
        trial_steps = config.lr_trial_samples // batch if config.lr_choices else math.inf
        if min(steps, trial_steps) <= config.warmup_steps or steps < 1:
            frozen.append(f"{r.name}: {steps} steps, a trial of {trial_steps}, a warm-up of {config.warmup_steps}")
    assert not frozen, "\n".join(frozen)
    assert any(RunConfig.from_namespace({**defaults, **r.params(profile)}).warmup_steps for r in grid.runs())


PROJECT_FILES = ("Makefile", "pyproject.toml", "requirements.txt", "published_numbers.csv", "vae_core", "aevb",
                 "notebooks", "scripts")


@pytest.mark.slow
def test_a_code_change_retrains_exactly_the_runs_that_code_trains(tmp_path):
    """make in a copy of the project, on a grid of two runs: a changed comment or docstring in the training
    code, or a change to code that does not train (aevb/figures.py), retrains nothing; a change to the code
    that trains (vae_core) retrains every run, each told why."""
    project = tmp_path / "project"
    project.mkdir()
    for name in PROJECT_FILES:  # copy2 keeps the mtimes, so the environment is not rebuilt
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_*"))
        else:
            shutil.copy2(ROOT / name, project / name)
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(textwrap.dedent(TINY_GRID.format(samples=2000, seeds=[1, 2])))
    venv = sys.prefix  # the environment these tests run in (make setup's)
    env = {**os.environ, "PYTHONPATH": str(project)}

    def make_runs():
        result = subprocess.run(["make", "-C", str(project), "runs", "PROFILE=smoke", f"GRID_FILE={grid_file}",
                                 f"VENV={venv}", "-o", f"{venv}/.installed", f"RUNS={tmp_path}/runs",
                                 f"BUILD={tmp_path}/build", f"FIGURES={tmp_path}/figures"],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        # a progress line per trained run; each run's own lines are in its log beside its notebook
        trained = sorted(re.findall(r"trained mnist/(aevb_z2_tiny_s\d) in", result.stdout))
        logs = "".join(path.read_text() for path in (tmp_path / "build" / "notebooks").glob("train_*.log"))
        return trained, logs

    def edit(name, old, new):
        path = project / name
        text = path.read_text()
        assert text.count(old) == 1, (name, old)
        path.write_text(text.replace(old, new))

    both = ["aevb_z2_tiny_s1", "aevb_z2_tiny_s2"]
    assert make_runs()[0] == both
    config = (tmp_path / "runs/mnist/aevb_z2_tiny_s1/config.json").read_text()
    edit("vae_core/model.py", "def bernoulli(probs):\n", "def bernoulli(probs):  # a new comment\n")
    edit("vae_core/training.py", '    """Mean ELBO,', '    """The mean ELBO,')
    edit("aevb/figures.py", "def notebooks():\n", "UNUSED = 1\n\n\ndef notebooks():\n")
    assert make_runs()[0] == []
    edit("vae_core/training.py", "LR_SCHEDULES = (", "UNUSED = 1\nLR_SCHEDULES = (")
    trained, log = make_runs()
    assert trained == both and log.count("retraining it") == 2 and "code_hash" in log
    assert json.loads((tmp_path / "runs/mnist/aevb_z2_tiny_s1/config.json").read_text())["code_hash"] != \
        json.loads(config)["code_hash"]
    assert make_runs()[0] == []
