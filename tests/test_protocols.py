"""The papers' protocols where they differ from a plain reading: each protocol's pixel scale, batch MCEM's
updates per iteration, App. D's chains started from given states or the encoder's draws (Burda et al.'s Adam
on their sum: tests/test_wiring.py)."""
import math

import pytest
import torch
import torch.nn as nn

import vae_core as vc
from aevb import data, estimators, grid
from aevb.experiment import RunConfig
from conftest import small_model

# ---- pixel scale: grey level / 256 where Kingma & Welling's data had it, / 255 elsewhere ------------------

KINGMAS_DATA = {("mnist", "kingma"), ("frey", "kingma"), ("mnist", "fig3n1000"), ("mnist", "fig3n50000"),
                ("mnist", "fig3n1000-online"), ("mnist", "fig3n1000-encoder"), ("mnist", "kingma-paper"),
                ("mnist", "kingma-paper-lr0.02"), ("frey", "kingma-paper"), *[("mnist", v) for v in grid.KINGMA_VARIANTS]}


@pytest.mark.parametrize("key", sorted(grid.PROTOCOLS))
def test_each_protocol_has_its_papers_pixel_scale(key):
    config = RunConfig(**{k: v for k, v in grid.PROTOCOLS[key].items()}, dataset=key[0], protocol=key[1])
    assert config.pixel_scale == (256 if key in KINGMAS_DATA else 255), key
    for profile in grid.PROFILES:  # no budget changes it
        for run in grid.runs(dataset=key[0], protocol=key[1], profile=profile):
            assert run.params(profile).get("pixel_scale", 255) == config.pixel_scale


def test_the_pixel_scale_divides_the_grey_levels():
    for load, kwargs in ((data.load_mnist, dict(split="test")), (data.load_frey, dict(split="all"))):
        x255 = load(None, **kwargs, pixel_scale=255)
        x256 = load(None, **kwargs, pixel_scale=256)
        x255, x256 = (x[0] if isinstance(x, tuple) else x for x in (x255, x256))
        grey = (x255 * 255).round()  # the grey levels, 0..255
        assert torch.equal(x256, grey / 256) and torch.equal(x255, grey / 255) and x256.max() < 1
    assert data.load_mnist(None, "test")[0].max() == 1  # MNIST has white pixels: 1 at /255, 255/256 at /256
    # a Bernoulli decoder's best reconstruction of a grey pixel costs the pixel's entropy, which a white
    # pixel has at /256 (255/256) and not at /255 (1): the floor of -log p(x|z) rises
    entropy = lambda x: -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x)).sum(1).mean().item()  # noqa: E731
    x255, _ = data.load_mnist(None, "test", pixel_scale=255)
    x256, _ = data.load_mnist(None, "test", pixel_scale=256)
    assert entropy(x256) > entropy(x255) + 0.5


def test_a_pixel_scale_other_than_the_papers_is_refused():
    with pytest.raises(ValueError, match="pixel_scale=100"):
        data.load_mnist(None, "test", pixel_scale=100)
    with pytest.raises(ValueError, match="static binarization has none"):
        data.load_mnist(None, "test", binarize="static", pixel_scale=256)


# ---- batch MCEM: every chain moves, then `updates` M-steps on the whole training set -----------------------

def test_batch_mcem_moves_every_chain_and_makes_its_updates_per_iteration(monkeypatch):
    """A minibatch of the whole training set is anglepy's `step_batch_mcem`: per iteration, one HMC
    transition of each of the N chains, then `updates` decoder steps; its x-axis counts the N samples."""
    x = torch.bernoulli(torch.rand(40, 12))
    model = small_model()
    before = model.state_dict()["decoder.0.weight"].clone()
    steps = []
    make = vc.make_optimizer

    def counting(*args, **kwargs):
        opt = make(*args, **kwargs)
        opt.register_step_post_hook(lambda *_: steps.append(1))
        return opt
    monkeypatch.setattr(vc.training, "make_optimizer", counting)
    visits = []
    history = vc.train(model, x, "mcem", samples=3 * 40, batch_size=40, optimizer="adagrad", lr=0.02,
                       eval_at=[40, 80, 120], device="cpu", updates=5,
                       eval_fn=lambda m, state: visits.append(state["chains"]["accept_prob"].clone()) or {})
    assert all(not v.isnan().any() for v in visits)  # after each iteration every chain has moved
    assert len(steps) == 3 * 5  # 3 iterations of 5 M-steps
    assert [row["samples"] for row in history] == [40, 80, 120]  # N samples per iteration
    assert not torch.equal(before, model.state_dict()["decoder.0.weight"])


def test_the_grid_runs_figure_3s_mcem_as_batch_mcem_and_the_online_variant_as_labelled():
    for profile in grid.PROFILES:
        for run in grid.runs(algorithm="mcem", protocol=["fig3n1000", "fig3n50000"], profile=profile):
            params = run.params(profile)
            assert params["batch_size"] == 0 and params["mcem_updates"] == 5, run.name
        for run in grid.runs(algorithm="mcem", protocol="fig3n1000-online", profile=profile):
            assert run.params(profile).get("batch_size", 100) == 100
    # (that batch_size 0 trains on the whole training set: tests/test_wiring.py)


# ---- App. D's estimator from given chain states ----------------------------------------------------------

class Bimodal(nn.Module):
    """A 'model' whose joint p(x, z) is p(x) times a two-component mixture in z: a light mode at the
    origin, where a chain from the prior lands, and one with 98% of the mass at (6, 0), which such a
    chain cannot reach through the barrier between them. log p(x) = LOG_PX exactly."""
    LOG_PX, WEIGHTS, CENTRES, STD = -50.0, (0.02, 0.98), ((0.0, 0.0), (6.0, 0.0)), 0.3
    x_dim, z_dim = 1, 2

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))  # a device for the estimator

    def decode(self, z):
        return z

    def log_mixture(self, z):
        parts = [math.log(w) + vc.log_normal(z, torch.tensor(c), torch.full((2,), 2 * math.log(self.STD)))
                 for w, c in zip(self.WEIGHTS, self.CENTRES)]
        return torch.logsumexp(torch.stack(parts), 0)

    def log_px_given_z(self, x, z):  # so that log p(x|z) + log p(z) = LOG_PX + log mixture(z)
        return self.LOG_PX + self.log_mixture(z) - vc.log_standard_normal(z) + 0 * x.sum(-1)


def test_appendix_d_from_given_states_agrees_with_importance_sampling_where_the_prior_start_fails():
    model, x = Bimodal(), torch.zeros(20, 1)
    # importance sampling with a wide proposal covering both modes
    proposal = torch.distributions.Normal(torch.tensor([3.0, 0.0]), torch.tensor([4.0, 2.0]))
    z = proposal.sample((200_000,))
    log_w = estimators.log_joint_fn(model, x[:1])(z[:, None, :]).squeeze(1) - proposal.log_prob(z).sum(-1)
    is_estimate = (torch.logsumexp(log_w.double(), 0) - math.log(len(z))).item()
    assert is_estimate == pytest.approx(Bimodal.LOG_PX, abs=0.05)

    from_prior = estimators.log_likelihood_appendix_d(model, x, seed=1)
    given = torch.tensor([6.0, 0.0]).repeat(len(x), 1) + 0.1 * torch.randn(len(x), 2)
    from_given, last = estimators.log_likelihood_appendix_d(model, x, z_init=given, seed=1, return_chains=True)
    # the chain from the prior stays in the light mode: about log 0.02 = -3.9 nats low
    assert from_prior.mean().item() < is_estimate - 3
    assert from_given.mean().item() == pytest.approx(is_estimate, abs=0.3)
    assert last.shape == (len(x), 2) and (last[:, 0] > 4).all()  # the chains end where the mass is
    with pytest.raises(ValueError, match="z_init has shape"):
        estimators.log_likelihood_appendix_d(model, x, z_init=given[:3])


class BimodalWithEncoder(Bimodal):
    """Bimodal, with an encoder whose q(z|x) sits on the heavy mode."""
    def encode(self, x):
        return torch.tensor([6.0, 0.0]).expand(len(x), 2), torch.full((len(x), 2), 2 * math.log(0.2))


def test_appendix_d_from_the_encoder_finds_the_mass_where_the_prior_start_misses_it():
    """train_run starts App. D's chains at encoder_sample (anglepy's ll_estimator: gen_xz draws z ~ q(z|x)): on
    the bimodal posterior, chains from the encoder's draws give log p(x), chains from the prior ~4 nats less."""
    model, x = BimodalWithEncoder(), torch.zeros(20, 1)
    z_init = estimators.encoder_sample(model, x, seed=3)
    assert z_init.shape == (20, 2) and (z_init[:, 0] - 6.0).abs().max() < 1.0  # q's draws, one per point
    assert torch.equal(z_init, estimators.encoder_sample(model, x, seed=3))  # on its own seeded stream
    from_encoder = estimators.log_likelihood_appendix_d(model, x, z_init=z_init, seed=2)
    from_prior = estimators.log_likelihood_appendix_d(model, x, seed=2)
    assert from_encoder.mean().item() == pytest.approx(Bimodal.LOG_PX, abs=0.3)
    assert from_prior.mean().item() < Bimodal.LOG_PX - 3


# ---- each profile's figure notebooks read that profile's runs -------------------------------------------

def test_every_figure_notebook_asks_the_grid_for_its_profiles_runs():
    """A profile trains a subset of the grid (a sweep's `profiles`): a notebook that asked for every run of
    the grid would look for folders its profile never trains (the default profile's build failed so)."""
    import json
    import re

    from conftest import ROOT
    for notebook in grid.NOTEBOOK_RUNS:
        nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert re.search(r'^profile = "default"', code, re.M), f"{notebook}: no `profile` parameter"
        for call in re.finditer(r"grid\.(runs|notebook_runs|latent_dims)\(([^()]*(\([^()]*\))?[^()]*)\)", code):
            assert "profile=" in call.group(2), f"{notebook}: {call.group(0)} reads every profile's runs"
