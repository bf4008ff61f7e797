"""Runs by name and profile (aevb.catalog): loading from any working directory, a run's test data, the
errors that say where a missing run is, train.ipynb's run folder, and the figure notebooks' folders
derived from their one `profile` parameter, with their refusals."""
import json
import shutil
import subprocess
import uuid

import pytest
import torch

import vae_core as vc
from aevb import catalog, data, grid, paths
from aevb.experiment import RunConfig
from aevb.runs import code_hash, save_run
from conftest import PY, ROOT

NAME = "mnist/aevb_z2_report_s1"


def finished_run(folder, algorithm="aevb", z_dim=2, test_size=50, code=None, **config):
    """A finished run folder with a small model and a one-row history."""
    torch.manual_seed(z_dim)
    model = vc.VAE(784, z_dim, hidden=(16,), init_std=0.5)
    config = {"dataset": "mnist", "binarize": "none", "algorithm": algorithm, "latent_dim": z_dim,
              "protocol": "report", "seed": 1, "test_size": test_size, "code_hash": code or code_hash(), **config}
    history = [{"samples": 100, "epoch": 1.0, "wall_time": 0.1, "train_elbo": -200.0, "test_elbo": -201.0,
                "test_recon": -195.0, "test_kl": 6.0}]
    save_run(folder, config, history, model)
    return model


def test_a_run_loads_by_name_and_profile_with_its_test_data(tmp_path):
    root = tmp_path / "runs"
    model = finished_run(root / "smoke" / NAME)
    run = catalog.load(NAME, profile="smoke", root=root)
    assert run["name"] == NAME and run["folder"] == root / "smoke" / NAME and run["config"]["latent_dim"] == 2
    x = torch.rand(3, 784)
    assert torch.equal(run["model"].encode(x)[0], model.eval().encode(x)[0])
    assert "model" not in catalog.load(NAME, profile="smoke", root=root, model=False)
    test_x, labels = catalog.test_data(run)
    all_x, all_labels = data.load("mnist", "test")
    assert test_x.shape == (50, 784) and torch.equal(test_x, all_x[:50]) and torch.equal(labels, all_labels[:50])
    assert len(catalog.test_data(run, n=7)[0]) == 7


def test_a_missing_run_names_the_profiles_that_have_it(tmp_path):
    root = tmp_path / "runs"
    finished_run(root / "smoke" / NAME)
    finished_run(root / "paper" / NAME)
    with pytest.raises(FileNotFoundError) as error:
        catalog.load(NAME, profile="default", root=root)
    assert f"no finished run {NAME} in profile 'default'" in str(error.value)
    assert "finished in profile 'smoke', 'paper'" in str(error.value)
    assert f"load('{NAME}', profile='smoke')" in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"No profile has it finished: train it with `make runs/default/mnist/"
                                                r"aevb_z3_report_s1/metrics.json PROFILE=default`"):
        catalog.load("mnist/aevb_z3_report_s1", root=root)
    with pytest.raises(FileNotFoundError, match=r"not a run of the experiment grid"):
        catalog.load("mnist/aevb_z7_nothing_s1", root=root)
    (root / "default" / NAME).mkdir(parents=True)  # an unfinished folder is not a run
    with pytest.raises(FileNotFoundError, match="finished in profile 'smoke'"):
        catalog.load(NAME, profile="default", root=root)


def test_a_run_loads_by_name_or_by_a_path_from_the_repository_in_any_working_directory(tmp_path):
    profile = f".test-{uuid.uuid4().hex[:8]}"  # a folder of its own below the repository's runs/
    folder = paths.ROOT / "runs" / profile
    try:
        finished_run(folder / NAME)
        code = (f"from aevb import catalog\n"
                f"print(catalog.load({NAME!r}, profile={profile!r})['name'])\n"
                f"print(catalog.load('runs/{profile}/{NAME}', model=False)['folder'])\n")
        for cwd in (tmp_path, ROOT / "notebooks"):
            result = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=cwd)
            assert result.returncode == 0, result.stderr
            assert result.stdout.split("\n")[:2] == [NAME, str(folder / NAME)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        catalog.load(tmp_path / "nothing")


def test_the_training_notebooks_folder_follows_its_parameters(tmp_path):
    root = tmp_path / "runs"
    default = catalog.train_folder(RunConfig(), root=root)
    assert default.parent == root / "interactive" / "mnist" and default.name.startswith("aevb_z2_custom_s1-")
    assert catalog.train_folder(RunConfig(), root=root) == default
    others = {catalog.train_folder(RunConfig(**change), root=root) for change in
              ({"latent_dim": 3}, {"lr": 0.01}, {"samples": 1000}, {"hidden": [200]}, {"seed": 2})}
    assert len(others) == 5 and default not in others
    assert catalog.train_folder(RunConfig(device="cpu", checkpoint_every=1000), root=root) == default  # how, not what
    # a run of the grid: the profile's own folder when make finished it with this code, else an interactive one
    name = "mnist/aevb_z20_kingma_s1"
    config = RunConfig(**{k: v for k, v in grid.run(name).params("smoke").items()})
    assert catalog.train_folder(config, name, "smoke", root) == root / "interactive" / "smoke" / name
    finished_run(root / "smoke" / name, code="0123456789ab")  # made by other code
    assert catalog.train_folder(config, name, "smoke", root) == root / "interactive" / "smoke" / name
    finished_run(root / "smoke" / name)
    assert catalog.train_folder(config, name, "smoke", root) == root / "smoke" / name


# ---- the figure notebooks' folders --------------------------------------------------------------------

def fake_runs(runs_root, notebook, profile, skip=()):
    """metrics.json in the folder of every run `notebook` reads in `profile` (what notebook_folders checks)."""
    for r in grid.notebook_runs(notebook, profile=profile):
        if r.name not in skip:
            r.folder(runs_root).mkdir(parents=True, exist_ok=True)
            (r.folder(runs_root) / "metrics.json").write_text("{}")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root of its own, run by hand (not under make)."""
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAKELEVEL", raising=False)
    return tmp_path


def test_the_folders_follow_the_profile_and_never_make_figures_by_hand(repo, capsys):
    fake_runs(repo / "runs" / "smoke", "burda2015", "smoke")
    runs_root, figures_root = catalog.notebook_folders("burda2015", "smoke")
    assert (runs_root, figures_root) == (repo / "runs" / "smoke", repo / "figures" / "interactive" / "smoke")
    assert "figures into" in capsys.readouterr().out
    other = repo / "elsewhere"
    fake_runs(other, "burda2015", "smoke")
    assert catalog.notebook_folders("burda2015", "smoke", str(other), "out") == (other, repo / "out")
    assert not (repo / "out").exists() and not (repo / "figures").exists()  # nothing written


def test_make_figures_folder_given_by_hand_is_said_loudly_and_not_under_make(repo, capsys, monkeypatch):
    fake_runs(repo / "runs" / "smoke", "burda2015", "smoke")
    assert catalog.notebook_folders("burda2015", "smoke", "", "figures/smoke")[1] == repo / "figures" / "smoke"
    err = capsys.readouterr().err
    assert "WARNING" in err and "`make paper` owns" in err
    monkeypatch.setenv("MAKELEVEL", "1")
    catalog.notebook_folders("burda2015", "smoke", "runs/smoke", "figures/smoke")
    assert capsys.readouterr() == ("", "")


def test_a_profile_that_is_unknown_or_another_profiles_runs_is_refused(repo):
    with pytest.raises(ValueError, match="profile='huge' is not known; expected one of smoke, default, paper"):
        catalog.notebook_folders("kingma2013", "huge")
    with pytest.raises(ValueError, match=r"runs_dir='runs/smoke' holds the smoke profile's runs, but "
                                         r"profile='default': set profile='smoke' alone"):
        catalog.notebook_folders("wake_sleep_gap", "default", "runs/smoke")


def test_missing_runs_are_refused_before_anything_is_written_naming_where_they_are(repo):
    fake_runs(repo / "runs" / "smoke", "burda2015", "smoke")
    with pytest.raises(FileNotFoundError) as error:
        catalog.notebook_folders("burda2015", "default")
    text = str(error.value)
    assert f"{len(grid.notebook_runs('burda2015', profile='default'))} are not finished in {repo / 'runs' / 'default'}" in text
    assert "finished in profile 'smoke': set profile='smoke'" in text and "Nothing was written" in text
    fake_runs(repo / "runs" / "default", "burda2015", "default", skip={"mnist/iwae_z50_burda_s1"})
    with pytest.raises(FileNotFoundError, match=r"1 are not finished in .*: mnist/iwae_z50_burda_s1\. "):
        catalog.notebook_folders("burda2015", "default")
    assert not (repo / "figures").exists()


def test_every_figure_notebook_derives_its_folders_from_its_profile():
    import papermill
    for notebook in grid.NOTEBOOK_RUNS:
        path = ROOT / "notebooks" / f"{notebook}.ipynb"
        declared = papermill.inspect_notebook(str(path))
        assert {k: declared[k]["default"] for k in ("profile", "runs_dir", "figures_dir")} == {
            "profile": '"default"', "runs_dir": '""', "figures_dir": '""'}, notebook
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert f'notebook_folders("{notebook}", profile, runs_dir, figures_dir)' in code, notebook
        assert "paths.ROOT / figures_dir" not in code and "paths.ROOT / runs_dir" not in code, notebook


def test_grid_runs_load_one_seed_of_the_matching_runs_keyed_by_dataset_algorithm_and_nz(tmp_path):
    wanted = grid.runs(seed=1, profile="smoke", protocol="report", latent_dim=2)
    assert wanted, "the smoke profile's report runs include Nz = 2"
    for r in wanted:
        finished_run(r.folder(tmp_path), algorithm=r.algorithm)
    loaded = catalog.grid_runs(tmp_path, "smoke", protocol="report", latent_dim=2)
    assert sorted(loaded) == sorted((r.dataset, r.algorithm, 2) for r in wanted)
    assert all(run["name"] == r.name for r in wanted for run in [loaded[r.dataset, r.algorithm, 2]])
    with pytest.raises(FileNotFoundError):  # a run of the grid that is not finished there
        catalog.grid_runs(tmp_path, "smoke", protocol="report", latent_dim=3)


def course_run(folder, test_bounds, **config):
    """A finished run whose history's test bound is `test_bounds`, one row per 100 samples."""
    model = vc.VAE(784, 2, hidden=(4,))
    history = [{"samples": 100 * (i + 1), "epoch": i + 1.0, "wall_time": 0.1, "train_elbo": b, "test_elbo": b,
                "test_recon": b + 3.0, "test_kl": 3.0 + i} for i, b in enumerate(test_bounds)]
    config = {"dataset": "mnist", "algorithm": "wake_sleep", "latent_dim": 2, "protocol": "kingma", "seed": 2,
              "code_hash": code_hash(), **config}
    save_run(folder, config, history, model, extra_metrics={"lr": config.get("lr") or 0.02})
    return catalog.load(folder)


def test_a_protocol_summary_reads_how_runs_trained_and_lists_where_they_differ(tmp_path):
    a = course_run(tmp_path / "mnist/a", [-150.0], optimizer="adagrad", weight_prior=True, recognition="anglepy",
                   minibatches="replacement", samples=100)
    b = course_run(tmp_path / "mnist/b", [-150.0], optimizer="adagrad", weight_prior=True, recognition="paper",
                   lr=0.01, samples=100)
    assert catalog.protocol_summary([a]) == (
        "kingma protocol: adagrad lr 0.02, hidden [500], weight prior True, binarize none, recognition model "
        "anglepy, minibatches replacement, 100 training samples")
    assert ("lr 0.01/0.02" in catalog.protocol_summary([a, b])
            and "recognition model anglepy/paper, minibatches epochs/replacement" in catalog.protocol_summary([a, b]))
    with pytest.raises(ValueError, match="at least one run"):
        catalog.protocol_summary([])


def test_a_test_bound_course_is_its_peak_its_end_and_its_fall(tmp_path):
    run = course_run(tmp_path / "mnist/c", [-160.0, -120.0, -130.5], recognition="anglepy", minibatches="replacement")
    row = catalog.test_bound_course(run)
    assert row["peak test bound"] == -120.0 and row["at samples"] == 200
    assert row["final test bound"] == -130.5 and row["fall from the peak"] == -10.5 and row["final test KL"] == 5.0
    assert (row["Nz"], row["seed"], row["lr"], row["samples"], row["recognition model"], row["minibatches"]) == (
        2, 2, 0.02, 300, "anglepy", "replacement")
    rising = catalog.test_bound_course(course_run(tmp_path / "mnist/d", [-160.0, -120.0]))
    assert rising["fall from the peak"] == 0.0 and rising["minibatches"] == "epochs"  # the default, not recorded
