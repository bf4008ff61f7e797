"""Run folders and the files the project writes: saved and loaded whole, reused or refused by config,
locked against a second writer, written atomically with the user's umask; and the code hash."""
import json
import os
import stat
import subprocess

import pytest
import torch

import vae_core as vc
from aevb import files, runs
from aevb.figures import save_figure
from conftest import PY, ROOT, repository_status, small_model, written_outside


def test_save_and_load_run_round_trip(tmp_path):
    model = small_model()
    history = vc.train(model, torch.bernoulli(torch.full((200, 12), 0.3)), "aevb", samples=400,
                            test_x=torch.bernoulli(torch.full((50, 12), 0.3)), eval_at=[200])
    run_dir = tmp_path / "runs" / "toy"
    with pytest.raises(FileNotFoundError, match="no finished run"):
        runs.load_run(run_dir)
    metrics = runs.save_run(run_dir, {"seed": 0, "algorithm": "aevb"}, history, model)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "history.csv", "metrics.json", "model.pt"]
    run = runs.load_run(run_dir)
    assert run["metrics"] == json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert run["name"] == "runs/toy" and run["config"] == {"seed": 0, "algorithm": "aevb"}
    assert metrics["test_elbo"] == pytest.approx(history[-1]["test_elbo"])
    assert {"seed", "device", "torch_version", "wall_time", "train_recon", "test_kl"} <= set(metrics)
    assert [r["samples"] for r in run["history"]] == [200, 400]
    assert run["history"][-1]["test_elbo"] == pytest.approx(history[-1]["test_elbo"])
    x = torch.rand(3, 12)
    assert torch.equal(run["model"].encode(x)[0], model.eval().encode(x)[0])
    assert "model" not in runs.load_summary(run_dir)


def test_files_written_get_the_users_umask(tmp_path):
    """A run folder or a page is read by colleagues and web servers: 0644 under umask 022, not 0600."""
    old = os.umask(0o022)
    try:
        files.atomic_write_text(tmp_path / "a" / "text.txt", "hello")
        files.atomic_save({"x": torch.ones(2)}, tmp_path / "a" / "state.pt")
        runs.save_run(tmp_path / "run", {"seed": 0}, [{"samples": 1, "epoch": 1.0, "wall_time": 0.0}], small_model())
        os.umask(0o027)
        files.atomic_write_text(tmp_path / "group.txt", "group")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert modes.pop("group.txt") == 0o640
    assert modes == {"a": 0o755, "a/text.txt": 0o644, "a/state.pt": 0o644, "run": 0o755, "run/config.json": 0o644,
                     "run/history.csv": 0o644, "run/model.pt": 0o644, "run/metrics.json": 0o644}
    assert (tmp_path / "a" / "text.txt").read_text() == "hello"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    files.atomic_write_text(target, "old")
    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_finished_run_with_another_config_is_refused_without_replace_stale(tmp_path):
    run_dir = tmp_path / "run"
    config = {"lr": 0.001, "seed": 1}
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.json").write_text("{}")
    assert runs.prepare_run(run_dir, config) == (True, None)
    with pytest.raises(RuntimeError, match=r"another config \(lr: 0.001 -> 0.01\)"):
        runs.prepare_run(run_dir, {**config, "lr": 0.01})
    finished, checkpoint = runs.prepare_run(run_dir, {**config, "lr": 0.01}, replace_stale=True)
    assert not finished and not (run_dir / "metrics.json").exists()  # unfinished until retrained
    assert checkpoint.name.startswith("checkpoint-") and checkpoint.parent == run_dir


def test_checkpoint_of_another_config_is_never_resumed(tmp_path):
    _, old = runs.prepare_run(tmp_path, {"lr": 0.1})
    old.write_bytes(b"old")
    _, new = runs.prepare_run(tmp_path, {"lr": 0.2})
    assert new != old and not old.exists()


def test_two_processes_never_train_the_same_run(tmp_path):
    holder = subprocess.Popen([PY, "-c", "import time\nfrom aevb.runs import run_lock\n"
                               f"with run_lock({str(tmp_path)!r}):\n"
                               "    print('locked', flush=True); time.sleep(30)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="another process is training"):
            with runs.run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with runs.run_lock(tmp_path):  # free again once the holder is gone
        pass


def test_code_hash_follows_the_code_not_its_comments_or_docstrings(tmp_path):
    (tmp_path / "m.py").write_text('"""Module."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # note\n')
    base = runs.code_hash(["m.py"], root=tmp_path)
    (tmp_path / "m.py").write_text('"""Module, reworded."""\nimport math\n\n\ndef f(x):\n    """Other doc."""\n'
                                   '    # a new comment\n    return x + 1\n')
    assert runs.code_hash(["m.py"], root=tmp_path) == base
    (tmp_path / "m.py").write_text('"""Module."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return x + 2\n')
    assert runs.code_hash(["m.py"], root=tmp_path) != base
    assert len(runs.code_hash()) == 12  # the project's own training code parses


def test_training_code_is_the_trainers_import_closure_and_the_notebooks_parameters(tmp_path):
    for name, text in {"aevb/__init__.py": "", "aevb/experiment.py": "import json\nfrom aevb import a\n",
                       "aevb/a.py": "def f():\n    from vae_core.b import g\n    return g\n",
                       "vae_core/__init__.py": "", "vae_core/b.py": "import aevb.a\ng = 1\n",
                       "aevb/unused.py": "import aevb.experiment\n"}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    files = runs.training_code(root=tmp_path)
    assert files == ("aevb/__init__.py", "aevb/a.py", "aevb/experiment.py", "vae_core/__init__.py", "vae_core/b.py",
                     "notebooks/train.ipynb")  # a function's import too; a module that imports it is not its code
    own = runs.training_code()
    assert {"aevb/experiment.py", "aevb/runs.py", "aevb/declared.py", "aevb/estimators.py", "aevb/released.py",
            "vae_core/training.py", "notebooks/train.ipynb"} <= set(own)
    assert not {"aevb/catalog.py", "aevb/figures.py", "aevb/grid.py", "aevb/scorecard.py"} & set(own)


def test_the_code_hash_follows_the_notebooks_parameters_not_their_comments_or_other_cells(tmp_path):
    import shutil
    notebook = tmp_path / "notebooks" / "train.ipynb"
    notebook.parent.mkdir()
    shutil.copy(ROOT / "notebooks" / "train.ipynb", notebook)
    base = runs.code_hash(["notebooks/train.ipynb"], root=tmp_path)

    def edit(old, new):
        nb = json.loads(notebook.read_text())
        for cell in nb["cells"]:
            cell["source"] = [line.replace(old, new) for line in cell["source"]]
        notebook.write_text(json.dumps(nb))
    edit('"mnist" or "frey"', "which dataset")  # a comment
    edit("## Learning curve", "## Curves")  # another cell's words
    assert runs.code_hash(["notebooks/train.ipynb"], root=tmp_path) == base
    edit("init_std: float = 0.01", "init_std: float = 0.02")  # a default
    assert runs.code_hash(["notebooks/train.ipynb"], root=tmp_path) != base


def test_figures_are_written_atomically(tmp_path):
    """A figure is rewritten whole or not at all: a savefig that fails half-way leaves the old file and no
    temporary beside it; one that succeeds replaces it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    name = "report_fig3_performance_vs_latent_dim"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, name, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.pdf", f"{name}.png"]
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert old[f"{name}.png"][:8] == b"\x89PNG\r\n\x1a\n" and old[f"{name}.pdf"][:4] == b"%PDF"
    savefig = fig.savefig

    def failing(target, **kwargs):  # half a file, then a full disk
        target.write(b"\x89PNG half")
        raise OSError("disk full")
    fig.savefig = failing
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, name, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old
    fig.savefig = savefig
    ax.plot([1, 0])
    save_figure(fig, name, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)
    assert (tmp_path / f"{name}.png").read_bytes() != old[f"{name}.png"]
    with pytest.raises(KeyError):
        save_figure(fig, "not_a_paper_figure", tmp_path)


def test_a_relative_run_folder_is_from_the_repository_root_whatever_the_working_directory(tmp_path, monkeypatch):
    """A run trained or loaded by a relative folder lands in (or is read from) the repository, never inside
    whatever folder the process runs in (a run folder was once written inside another run's folder)."""
    from aevb import experiment, paths
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(paths, "ROOT", repo)
    monkeypatch.chdir(elsewhere)
    config = experiment.RunConfig(train_size=100, test_size=20, samples=200, latent_dim=2, hidden=[8], eval_points=1,
                                  device="cpu")
    experiment.train_run(config, "runs/interactive/mnist/relative", progress="none")
    assert (repo / "runs/interactive/mnist/relative/metrics.json").exists()
    assert list(elsewhere.iterdir()) == []
    assert runs.load_run("runs/interactive/mnist/relative")["metrics"]["samples"] == 200  # read from the root
    (elsewhere / "mine").mkdir()  # to read, a folder that exists from the working directory is taken from there
    assert paths.resolve("mine") == elsewhere / "mine"
    assert paths.resolve("mine", writing=True) == repo / "mine" and paths.resolve(tmp_path) == tmp_path


@pytest.mark.slow
def test_a_run_from_another_working_directory_writes_nothing_outside_runs(tmp_path):
    """The repository's own status around a run trained from notebooks/ and from a folder outside the repository:
    nothing appears outside runs/, figures/, build/ and data/."""
    name = f"runs/interactive/mnist/_test_{os.getpid()}"
    code = ("from aevb import experiment; experiment.train_run(experiment.RunConfig(train_size=100, test_size=20, "
            f"samples=200, latent_dim=2, hidden=[8], eval_points=1, device='cpu'), {name!r}, progress='none')")
    before = repository_status()
    try:
        for cwd in (ROOT / "notebooks", tmp_path):
            subprocess.run([PY, "-c", code], cwd=cwd, check=True, capture_output=True)
        assert (ROOT / name / "metrics.json").exists()
        assert written_outside(before, repository_status()) == [] and list(tmp_path.iterdir()) == []
    finally:
        import shutil
        shutil.rmtree(ROOT / name, ignore_errors=True)


def test_written_outside_names_a_stray_file_and_passes_the_build_folders():
    before = {"!! .venv/", " M aevb/grid.py"}
    after = before | {"!! runs/", "!! figures/smoke/", "!! build/", "!! data/", "!! aevb/__pycache__/",
                      "?? mnist/"}  # the stray lock's folder, as git status shows it
    assert written_outside(before, after) == ["mnist/"]
    assert written_outside(before, before) == []
