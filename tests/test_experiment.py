"""One run end to end: RunConfig refuses bad parameters before any work, the training notebook
refuses them too (and misspelt names), a killed run resumes to the same numbers; the device, the
evaluation points and Kingma's choice of the step size."""
import ast
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

import vae_core as vc
from aevb.experiment import RunConfig, choose_lr, log_spaced_points, select_device
from conftest import PY, ROOT, run_notebook, small_model


def notebook_defaults():
    """The training notebook's parameters cell, as values."""
    declared = papermill.inspect_notebook(str(ROOT / "notebooks" / "train.ipynb"))
    return {name: ast.literal_eval(p["default"]) for name, p in declared.items()}


def test_every_config_field_is_a_parameter_of_the_training_notebook():
    defaults = notebook_defaults()
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(defaults)
    config = RunConfig.from_namespace(defaults)  # the notebook's defaults are a valid run
    assert config.latent_dim == defaults["latent_dim"] and config.hidden == defaults["hidden"]


BAD_PARAMETERS = [
    ({"dataset": "cifar"}, "parameter dataset='cifar' is not allowed"),
    ({"algorithm": "sleep_wake"}, "parameter algorithm='sleep_wake' is not allowed"),
    ({"latent_dim": 0}, "parameter latent_dim=0 is not allowed"),
    ({"samples": -5}, "parameter samples=-5 is not allowed"),
    ({"batch_size": -1}, "parameter batch_size=-1 is not allowed"),
    ({"pixel_scale": 100}, "parameter pixel_scale=100 is not allowed"),
    ({"pixel_scale": 256, "binarize": "static"}, "parameter pixel_scale=256 is not allowed"),
    ({"lr": 0}, "parameter lr=0 is not allowed"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"lr_choices": [0.1, -1]}, "parameter lr_choices=-1 is not allowed"),
    ({"lr_choices": 0.1}, "parameter lr_choices=0.1 is not allowed"),
    ({"is_points": -1}, "parameter is_points=-1 is not allowed"),
    ({"hidden": [500, 0]}, "parameter hidden=[500, 0] is not allowed"),
    ({"weight_prior": 1}, "parameter weight_prior=1 is not allowed"),
    ({"dataset": "frey", "binarize": "dynamic"}, "parameter binarize='dynamic' is not allowed"),
    ({"algorithm": "mcem", "lr_choices": [0.1]}, "parameter lr_choices is not allowed for mcem"),
    ({"mcem_updates": 5}, "parameter mcem_updates=5 is not allowed for aevb"),
    ({"warmup_steps": -1}, "parameter warmup_steps=-1 is not allowed"),
    ({"lr_schedule": "cosine"}, "parameter lr_schedule='cosine' is not allowed"),
    ({"init": "he"}, "parameter init='he' is not allowed"),
    ({"adam_eps": 0}, "parameter adam_eps=0 is not allowed"),
    ({"refit_samples": 1000, "is_points": 0}, "parameter refit_samples=1000 needs is_points > 0"),
    ({"appd_points": -2}, "parameter appd_points=-2 is not allowed"),
] + ([] if torch.cuda.is_available() else [({"device": "cuda"}, "CUDA is not available")])


@pytest.mark.parametrize("bad, message", BAD_PARAMETERS)
def test_run_config_refuses_a_bad_parameter(bad, message):
    with pytest.raises((ValueError, RuntimeError), match=message.replace("[", r"\[").replace("]", r"\]")):
        RunConfig.from_namespace({**notebook_defaults(), **bad})


def test_misspelt_parameter_name_is_an_error_not_a_default(tmp_path):
    result = run_notebook(tmp_path, "-p", "latent_dims", "20")
    assert result.returncode != 0
    assert "unknown parameter(s) latent_dims" in result.stderr
    assert not (tmp_path / "train.ipynb").exists()  # refused before any kernel started


@pytest.mark.slow
def test_bad_parameters_stop_the_notebook_before_any_work(tmp_path):
    cases = [BAD_PARAMETERS[0], BAD_PARAMETERS[7], ({"threads": -1}, "parameter threads=-1 is not allowed"),
             ({"replace_stale": "yes"}, "parameter replace_stale='yes' is not allowed")]
    def attempt(case):
        i, (bad, _) = case
        params = [a for name, value in bad.items() for a in ("-p", name, repr(value))]
        return run_notebook(tmp_path / str(i), *params, "-p", "run_dir", tmp_path / f"run{i}")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, enumerate(cases)))
    for i, ((bad, message), result) in enumerate(zip(cases, results)):
        assert result.returncode != 0, bad
        assert message in result.stderr, (bad, result.stderr[-1500:])
        assert not (tmp_path / f"run{i}").exists(), bad  # refused before the run folder is made


def descendants(pid):
    """The pids of a process's children, their children and so on (read from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def progress_lines(executed):
    """The sample counts of the progress lines ('[aevb]  8,618/40,000 samples ...') an executed training
    notebook printed."""
    text = "".join(o.get("text", "") for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.output_type == "stream")
    return [int(n.replace(",", "")) for n in re.findall(r"^\[aevb\]\s+([\d,]+)/[\d,]+ samples", text, re.M)]


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    params = ["-p", "samples", "40000", "-p", "train_size", "2000", "-p", "test_size", "200",
              "-p", "eval_points", "4", "-p", "checkpoint_every", "4000", "-p", "latent_dim", "5",
              "-p", "hidden", "[300]", "-p", "progress", "lines", "-p", "threads", "1", "-p", "seed", "3"]
    reference = run_notebook(tmp_path / "ref", *params, "-p", "run_dir", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "killed"
    cmd = [PY, str(ROOT / "scripts" / "run_notebook.py"), str(ROOT / "notebooks" / "train.ipynb"),
           str(tmp_path / "killed.ipynb"), *params, "-p", "run_dir", str(run_dir)]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    while not list(run_dir.glob("checkpoint-*.pt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    # the notebook's kernel runs in a session of its own (jupyter_client starts it so), where killpg does not
    # reach: it is killed first, by its pid, so that it writes no checkpoint after the one read below
    for pid in descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list(run_dir.glob("checkpoint-*.pt")), "the run should have checkpointed before the kill"
    assert not (run_dir / "metrics.json").exists(), "a killed run must not look finished"
    [checkpoint] = run_dir.glob("checkpoint-*.pt")
    checkpointed = torch.load(checkpoint, weights_only=False)["samples_seen"]
    assert 0 < checkpointed < 40000

    resumed = run_notebook(tmp_path / "resume", *params, "-p", "run_dir", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # it resumed: it trained (and printed the evaluations of) only the samples after its checkpoint, while
    # the uninterrupted run printed every evaluation; a restart would print them all again
    logged = {name: progress_lines(tmp_path / name / "train.ipynb") for name in ("ref", "resume")}
    assert logged["ref"][0] <= checkpointed and logged["ref"][-1] == 40000
    assert logged["resume"] == [s for s in logged["ref"] if s > checkpointed], (checkpointed, logged)
    assert len(logged["resume"]) < len(logged["ref"])
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "samples"):
        assert got[key] == expected[key], key
    assert not list(run_dir.glob("checkpoint-*.pt"))  # a finished run keeps no checkpoint


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="tpu"):
        select_device("tpu")
    if not torch.cuda.is_available():
        assert select_device("auto") != torch.device("cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_log_spaced_points():
    points = log_spaced_points(3_000_000)
    assert points[0] == 10_000 and points[-1] == 3_000_000
    ratios = [b / a for a, b in zip(points, points[1:])]
    assert max(ratios) / min(ratios) < 1.01


def test_choose_lr_picks_the_best_training_bound_from_the_same_start():
    x = torch.bernoulli(torch.full((1000, 12), 0.3))
    model = small_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    common = dict(batch_size=50, optimizer="adagrad", weight_prior=True, seed=3, device="cpu")
    best, scores = choose_lr(model, x, "aevb", [1e-5, 0.05, 1e9], 2000, **common)
    assert best == 0.05 and scores[1e9] == -math.inf and scores[0.05] > scores[1e-5] > -math.inf
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # trials train copies
    # the score is exactly the training bound of that lr's run from this initialization
    same_start = small_model()
    same_start.load_state_dict(start)
    history = vc.train(same_start, x, "aevb", samples=2000, lr=0.05, eval_at=[2000], **common)
    assert history[-1]["train_elbo"] == scores[0.05]
    with pytest.raises(vc.TrainingDiverged, match="every learning rate"):
        choose_lr(model, x, "aevb", [1e9], 2000, **common)
    with pytest.raises(ValueError, match="MCEM"):
        choose_lr(model, x, "mcem", [0.1], 2000)
