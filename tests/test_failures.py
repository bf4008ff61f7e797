"""Fail early and clearly, lose nothing: bad parameters, bad data, divergence, kills, stale and shared runs."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import project
import vae_core as vc

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
QUICK = ["-p", "train_size", "1000", "-p", "test_size", "200", "-p", "eval_points", "2", "-p", "progress", "lines"]


def run_notebook(out_dir, *params, name="train"):
    cmd = [PY, str(ROOT / "scripts" / "run_notebook.py"), str(ROOT / "notebooks" / f"{name}.ipynb"),
           str(out_dir / f"{name}.ipynb"), *params]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


# ---- parameters ---------------------------------------------------------------------------------

BAD_PARAMETERS = [
    (["-p", "dataset", "cifar"], "parameter dataset='cifar' is not allowed"),
    (["-p", "algorithm", "sleep_wake"], "parameter algorithm='sleep_wake' is not allowed"),
    (["-p", "latent_dim", "0"], "parameter latent_dim=0 is not allowed"),
    (["-p", "samples", "-5"], "parameter samples=-5 is not allowed"),
    (["-p", "batch_size", "0"], "parameter batch_size=0 is not allowed"),
    (["-p", "lr", "0"], "parameter lr=0 is not allowed"),
    (["-p", "device", "tpu"], "device='tpu'"),
    (["-p", "lr_choices", "[0.1, -1]"], "parameter lr_choices=-1 is not allowed"),
    (["-p", "lr_choices", "0.1"], "parameter lr_choices=0.1 is not allowed"),
    (["-p", "is_points", "-1"], "parameter is_points=-1 is not allowed"),
] + ([] if torch.cuda.is_available() else [(["-p", "device", "cuda"], "CUDA is not available")])


def test_bad_parameters_stop_the_notebook_before_any_work(tmp_path):
    def attempt(case):
        i, (params, _) = case
        return run_notebook(tmp_path / str(i), *params, "-p", "run_dir", str(tmp_path / f"run{i}"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, enumerate(BAD_PARAMETERS)))
    for i, ((params, message), result) in enumerate(zip(BAD_PARAMETERS, results)):
        assert result.returncode != 0, params
        assert message in result.stderr, (params, result.stderr[-1500:])
        assert not (tmp_path / f"run{i}").exists(), params  # refused before the run folder is made
    assert not list(tmp_path.glob("run*/*")), "nothing may be written for a refused run"


def test_misspelt_parameter_name_is_an_error_not_a_default(tmp_path):
    result = run_notebook(tmp_path, "-p", "latent_dims", "20")
    assert result.returncode != 0
    assert "unknown parameter(s) latent_dims" in result.stderr
    assert not (tmp_path / "train.ipynb").exists()  # refused before any kernel started


def test_unknown_profile_is_refused_by_make():
    result = subprocess.run(["make", "-C", str(ROOT), "-n", "paper", "PROFILE=huge"], capture_output=True, text=True)
    assert result.returncode != 0 and "PROFILE=huge is not known" in result.stderr


# ---- data ---------------------------------------------------------------------------------------

def test_make_data_refuses_a_corrupt_source_and_leaves_nothing_behind(tmp_path):
    source, target = tmp_path / "source", tmp_path / "data"
    shutil.copytree(vc.default_data_dir(), source, ignore=shutil.ignore_patterns("*-ubyte", "*.pt"))
    frey = source / "frey" / "frey_rawface.mat"
    frey.write_bytes(frey.read_bytes()[:1000])  # truncated
    env = {**os.environ, "VAE_DATA_SOURCE": str(source), "VAE_DATA_DIR": str(target)}
    result = subprocess.run([PY, str(ROOT / "scripts" / "fetch_data.py")], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "frey/frey_rawface.mat" in result.stderr and "checksum" in result.stderr
    assert not (target / "frey" / "frey_rawface.mat").exists()
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")]


def test_data_folder_that_cannot_be_read_names_the_file(tmp_path):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("oops")
    with pytest.raises(vc.DataError, match=r"data/MNIST/raw/train-images-idx3-ubyte\.gz.*make data"):
        vc.load_mnist(not_a_folder, "train")


# ---- training -----------------------------------------------------------------------------------

class DivergingVAE(vc.VAE):
    """Its decoder starts returning NaN after a number of calls, as a diverging run would."""
    calls_before_nan = 40

    def decode(self, z):
        self.calls_before_nan -= 1
        out = super().decode(z)
        return out * float("nan") if self.calls_before_nan < 0 else out


def test_divergence_stops_with_when_and_what_and_keeps_the_last_good_checkpoint(tmp_path):
    x = torch.bernoulli(torch.full((500, 12), 0.3))
    ckpt = tmp_path / "checkpoint.pt"
    model = DivergingVAE(12, 2, hidden=(8,))
    with pytest.raises(vc.TrainingDiverged, match=r"between [\d,]+ and [\d,]+ training samples: non-finite log p\(x\|z\)"):
        vc.train_aevb(model, x, samples=20_000, eval_at=[1000], checkpoint_path=ckpt, checkpoint_every=500,
                      progress="none")
    state = torch.load(ckpt, weights_only=False)
    assert 0 < state["samples_seen"] <= 40 * 100  # the last checkpoint before the NaNs
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    params = ["-p", "samples", "40000", "-p", "train_size", "2000", "-p", "test_size", "200",
              "-p", "eval_points", "4", "-p", "checkpoint_every", "4000", "-p", "latent_dim", "5",
              "-p", "hidden", "[300]", "-p", "progress", "lines", "-p", "threads", "1", "-p", "seed", "3"]
    reference = run_notebook(tmp_path / "ref", *params, "-p", "run_dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-2000:]

    run_dir = tmp_path / "killed"
    cmd = [PY, str(ROOT / "scripts" / "run_notebook.py"), str(ROOT / "notebooks" / "train.ipynb"),
           str(tmp_path / "killed.ipynb"), *params, "-p", "run_dir", str(run_dir)]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    while not list(run_dir.glob("checkpoint-*.pt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the notebook's kernel dies with it
    process.wait()
    assert list(run_dir.glob("checkpoint-*.pt")), "the run should have checkpointed before the kill"
    assert not (run_dir / "metrics.json").exists(), "a killed run must not look finished"

    resumed = run_notebook(tmp_path / "resume", *params, "-p", "run_dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "samples"):
        assert got[key] == expected[key], key
    assert not list(run_dir.glob("checkpoint-*.pt"))  # a finished run keeps no checkpoint


# ---- cached and shared runs ---------------------------------------------------------------------

def test_make_reuses_an_unchanged_run_and_retrains_a_changed_one(tmp_path):
    target = f"{tmp_path}/runs/mnist/aevb_z2_report_s1/metrics.json"
    base = ["make", "-C", str(ROOT), target, "PROFILE=smoke", f"RUNS={tmp_path}/runs", f"BUILD={tmp_path}/build"]
    first = subprocess.run(base, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    before = (tmp_path / "runs/mnist/aevb_z2_report_s1/metrics.json").read_text()
    again = subprocess.run(base, capture_output=True, text=True)
    assert "notebooks/train.ipynb" not in again.stdout  # finished and unchanged: no work at all
    changed = subprocess.run(base + ["REPORT_BUDGET=-p samples 3000 -p train_size 1000 -p test_size 200 -p eval_points 2"],
                             capture_output=True, text=True)
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert "retraining it" in changed.stdout + changed.stderr
    after = json.loads((tmp_path / "runs/mnist/aevb_z2_report_s1/metrics.json").read_text())
    assert after["samples"] == 3000 and json.loads(before)["samples"] == 2000


def test_a_finished_run_with_another_config_is_refused_without_replace_stale(tmp_path):
    run_dir = tmp_path / "run"
    config = {"lr": 0.001, "seed": 1}
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.json").write_text("{}")
    assert project.prepare_run(run_dir, config) == (True, None)
    with pytest.raises(RuntimeError, match=r"another config \(lr: 0.001 -> 0.01\)"):
        project.prepare_run(run_dir, {**config, "lr": 0.01})
    finished, checkpoint = project.prepare_run(run_dir, {**config, "lr": 0.01}, replace_stale=True)
    assert not finished and not (run_dir / "metrics.json").exists()  # unfinished until retrained
    assert checkpoint.name.startswith("checkpoint-") and checkpoint.parent == run_dir


def test_checkpoint_of_another_config_is_never_resumed(tmp_path):
    _, old = project.prepare_run(tmp_path, {"lr": 0.1})
    old.write_bytes(b"old")
    _, new = project.prepare_run(tmp_path, {"lr": 0.2})
    assert new != old and not old.exists()


def test_two_processes_never_train_the_same_run(tmp_path):
    holder = subprocess.Popen([PY, "-c", "import sys, time, project\n"
                               f"with project.run_lock({str(tmp_path)!r}):\n"
                               "    print('locked', flush=True); time.sleep(30)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="another process is training"):
            with project.run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with project.run_lock(tmp_path):  # free again once the holder is gone
        pass


def test_figures_are_written_atomically(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    project.save_figure(fig, "report_fig3_performance_vs_latent_dim", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report_fig3_performance_vs_latent_dim.pdf",
                                                          "report_fig3_performance_vs_latent_dim.png"]
    with pytest.raises(KeyError):
        project.save_figure(fig, "not_a_paper_figure", tmp_path)
