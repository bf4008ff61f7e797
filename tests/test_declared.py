"""Each dataset and algorithm is declared once (aevb/declared.py) and read everywhere else: the declarations
hold what the data and the training code do, and a name that is not declared is refused with where to add it."""
import dataclasses
import json
import math

import pytest

import vae_core as vc
from aevb import data, declared, explore, figures, grid, progress
from aevb.experiment import RunConfig, train_run


def test_every_algorithm_that_trains_is_declared_and_nothing_else():
    assert set(declared.ALGORITHMS) == set(vc.ALGORITHMS)
    assert len(set(declared.COLOR.values())) == len(declared.COLOR)  # one colour each
    # the explorer's algorithms with a recognition model: vae_core's, read from there
    assert set(explore.ENCODERS) == {name for name, cls in vc.ALGORITHMS.items() if cls.has_bound}
    assert {"aevb", "wake_sleep", "iwae"} <= set(explore.ENCODERS) and "mcem" not in explore.ENCODERS


@pytest.mark.parametrize("name", sorted(declared.DATASETS))
def test_each_datasets_declaration_is_what_its_files_hold(name):
    d = declared.dataset(name)
    test_x, _ = data.load(name, "test")
    assert test_x.shape == (d.test_points, d.x_dim) and figures.IMAGE_SHAPE[name] == d.image_shape
    for binarize, points in d.train_points.items():
        assert len(data.load(name, "train", binarize)[0]) == points, binarize
    assert RunConfig(dataset=name).dataset == name
    for binarize in {"none", "dynamic", "static"} - set(d.binarize):
        with pytest.raises(ValueError, match=f"binarize={binarize!r}"):
            RunConfig(dataset=name, binarize=binarize)


def test_an_undeclared_name_is_refused_saying_where_to_declare_it():
    with pytest.raises(ValueError, match="dataset='cifar'"):
        RunConfig(dataset="cifar")
    with pytest.raises(ValueError, match="expected one of"):
        data.load("cifar", "test")
    with pytest.raises(ValueError, match="not declared in aevb/declared.py"):
        progress.training_flops_per_sample({"algorithm": "vimco", "dataset": "mnist", "latent_dim": 2})


def test_each_figure_declares_its_paper_and_the_scorecards_sources_judged_beside_it():
    import csv
    import importlib.util

    from conftest import ROOT
    with open(ROOT / "published_numbers.csv", newline="") as f:
        sources = {row["source"] for row in csv.DictReader(f)}
    assert {s.rsplit(", ", 1)[0] for s in sources} <= set(figures.PAPERS)  # every source's paper has a title
    for name, figure in figures.FIGURES.items():
        assert figure.paper in {"", *figures.PAPERS}, name
        assert set(figure.judges) <= sources, name  # each a source the scorecard judges
        assert figure.paper or not figure.judges, name  # a figure beyond the papers judges nothing
        assert (ROOT / "notebooks" / f"{figure.notebook}.ipynb").exists(), name
    # the index page's sections are derived from the declarations, in their order
    spec = importlib.util.spec_from_file_location("build_html", ROOT / "scripts" / "build_html.py")
    build_html = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_html)
    assert list(build_html.PAPERS) == list(figures.PAPERS)
    assert build_html.PAPERS["Kingma & Welling (2013)"]["kingma_fig2_lower_bound"] == [
        "Kingma & Welling (2013), Figure 2", "Andriciuc (2025), claim 1"]
    shown = [name for paper in build_html.PAPERS.values() for name in paper]
    assert shown == [name for name, f in figures.FIGURES.items() if f.paper]


def test_a_run_parameter_is_declared_by_one_line_of_the_notebook_and_a_bad_line_is_refused(tmp_path):
    from aevb import declared
    source = declared.parameters_source()
    parameters = declared.parameters()
    assert [p.name for p in parameters if not p.page] == [f.name for f in dataclasses.fields(RunConfig)]
    assert {p.name for p in parameters if p.page} == {"threads", "run", "profile", "run_dir", "replace_stale", "progress"}
    lr = next(p for p in parameters if p.name == "lr")
    assert (lr.type, lr.default) == (float, 0.001) and lr.doc in source
    assert dataclasses.fields(RunConfig)[0].metadata["doc"] == parameters[0].doc

    def notebook_with(old, new):
        nb = json.loads(declared.TRAIN_NOTEBOOK.read_text())
        [cell] = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        cell["source"] = "".join(cell["source"]).replace(old, new)
        path = tmp_path / "train.ipynb"
        path.write_text(json.dumps(nb))
        return path
    with pytest.raises(ValueError, match="is not `name: type = default"):
        declared.parameters(notebook_with("seed: int = 1  # seeds", "seed = 1  # seeds"))
    with pytest.raises(ValueError, match="is not `name: type = default"):
        declared.parameters(notebook_with("seed: int = 1  # seeds initialization, shuffling and noise", "seed: int = 1"))
    with pytest.raises(ValueError, match="seed's default '1' is not of type int"):
        declared.parameters(notebook_with("seed: int = 1", "seed: int = '1'"))
    with pytest.raises(ValueError, match="no line"):
        declared.parameters(notebook_with(declared.PAGE_MARK, "# the page"))


def test_a_new_algorithm_is_its_class_its_declaration_and_its_runs(monkeypatch, tmp_path):
    """Adding an algorithm is three edits: its class in vae_core.ALGORITHMS, its label, colour and
    cost in aevb/declared.py, its runs in aevb/grid.py; everything else reads them. Planted here:
    IWAE with k = 5 on Frey Face, costed, checked and trained end to end under its own name."""
    class IWAE5(vc.IWAE):
        name = "iwae5"
        options = {"n_samples": 5}

    monkeypatch.setitem(vc.ALGORITHMS, "iwae5", IWAE5)
    new = declared.Algorithm("IWAE (k = 5)", "tab:purple", 3, 3)
    monkeypatch.setitem(declared.ALGORITHMS, "iwae5", new)
    monkeypatch.setitem(declared.LABEL, "iwae5", new.label)  # declared's views, made at import
    monkeypatch.setitem(declared.COLOR, "iwae5", new.color)
    sweep = dict(dataset="frey", protocol="kingma", algorithms=["iwae5"], latent_dims=[2], seeds=[1],
                 params=dict(recognition="anglepy-va"))  # anglepy has no IWAE: an AEVB's encoder
    monkeypatch.setattr(grid, "RUNS", [*grid.RUNS, sweep])
    run = grid.run("frey/iwae5_z2_kingma_s1")
    assert run in grid.runs(algorithm="iwae5", profile="default")
    # a run states k: the class's own default is not the run parameter's (1), which would train
    with pytest.raises(ValueError, match="iwae5's own default n_samples=5 is not the run parameter's"):
        RunConfig(**run.params("smoke"))
    sweep["params"]["n_samples"] = 5
    run = grid.run("frey/iwae5_z2_kingma_s1")
    params = dict(run.params("smoke"), samples=500, lr_choices=[0.01], eval_points=1)
    cost = progress.run_cost(params)["flops"]  # IWAE's at k = 5, more than at k = 1
    assert cost == progress.run_cost(dict(params, algorithm="iwae"))["flops"]
    assert cost > progress.run_cost(dict(params, n_samples=1))["flops"]
    trained = train_run(RunConfig(**params), tmp_path / run.name, progress="none")
    assert trained["config"]["algorithm"] == "iwae5" and trained["config"]["n_samples"] == 5
    assert "running_iwae_bound" in trained["history"][-1]
    assert math.isfinite(trained["metrics"]["test_elbo"])
