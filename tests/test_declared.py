"""Each dataset and algorithm is declared once (aevb/declared.py) and read everywhere else: the declarations
hold what the data and the training code do, and a name that is not declared is refused with where to add it."""
import pytest

import vae_core as vc
from aevb import data, declared, explore, figures, progress
from aevb.experiment import RunConfig


def test_every_algorithm_that_trains_is_declared_and_nothing_else():
    assert set(declared.ALGORITHMS) == set(vc.ALGORITHMS)
    assert len(set(declared.COLOR.values())) == len(declared.COLOR)  # one colour each
    # the explorer's algorithms with a recognition model: vae_core's, read from there
    assert set(explore.ENCODERS) == {name for name, cls in vc.ALGORITHMS.items() if cls.has_bound} \
        == {"aevb", "wake_sleep", "iwae"}


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
