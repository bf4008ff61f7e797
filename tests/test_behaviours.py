"""Each behaviour a published number depends on, pinned by a test that fails when it is switched off
(scripts/mutation_check.py switches each off in a scratch copy and shows which test catches it): the
logged running terms, dynamic binarization in training, the weight prior, IWAE's k, MCEM's chains
under shuffled minibatches, the HMC estimator's given chain states and wake-sleep's sleep phase."""
import math

import pytest
import torch

import vae_core as vc
from aevb import estimators
from aevb.estimators import log_likelihood, log_likelihood_hmc
from aevb.runs import Checkpoint
from conftest import exact_log_px, small_model

pytestmark = pytest.mark.usefixtures("one_thread")

FROZEN = 10 ** 6  # a warm-up longer than any run here: the optimizer never updates a parameter


def parameters_of(model):
    return [p.detach().clone() for p in model.parameters()]


# ---- the running terms: what the training log shows of the steps since the last evaluation -------------

@pytest.mark.parametrize("algorithm, k, key", [("aevb", 1, "running_elbo"), ("wake_sleep", 1, "running_elbo"),
                                               ("iwae", 10, "running_iwae_bound")])
def test_running_terms_match_an_independent_evaluation_of_the_frozen_model(algorithm, k, key):
    """With the parameters frozen (a warm-up longer than the run), the running term over two epochs is
    a Monte Carlo estimate of the bound the step ascends, averaged over the data: the ELBO, or for IWAE
    the k-sample bound (estimators.log_likelihood with k draws), which lies well above the ELBO."""
    torch.manual_seed(0)
    model = small_model()
    x = torch.bernoulli(torch.rand(8, 12).repeat(50, 1))  # 400 points, 8 patterns
    start = parameters_of(model)
    history = vc.train(model, x, algorithm, samples=1600, batch_size=50, n_samples=k, warmup_steps=FROZEN,
                       eval_at=[800], device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(start, model.parameters()))  # frozen indeed
    with torch.no_grad():  # the bound of each of many draws: its mean, and the spread of one draw
        draws = log_likelihood(model, x.repeat(20, 1), k=k).float() if k > 1 else model.elbo(x.repeat(20, 1))[0]
        elbo = model.elbo(x, n_samples=1000)[0].mean().item()
    expected, tolerance = draws.mean().item(), 4 * draws.std().item() / math.sqrt(800) + 1e-3
    assert [row["samples"] for row in history] == [800, 1600]
    for row in history:  # each row covers the 800 samples since the one before
        assert row[key] == pytest.approx(expected, abs=tolerance), (row[key], expected, tolerance)
    if algorithm == "iwae":  # the k-sample bound, not the ELBO
        assert expected - elbo > 5 * tolerance, (expected, elbo, tolerance)


# ---- dynamic binarization ---------------------------------------------------------------------------

def test_dynamic_binarization_trains_on_fresh_0_1_draws_and_evaluates_one_fixed_draw(monkeypatch):
    """Burda et al.'s dynamic binarization: each time a point enters a minibatch it is a new Bernoulli
    draw of its grey levels; the training-set bound is evaluated on one fixed draw, like a binarized test set."""
    steps, evaluated = [], []
    step = vc.AEVB.__call__
    monkeypatch.setattr(vc.AEVB, "__call__", lambda self, opt, xb, idx: (steps.append((xb.clone(), idx.clone())),
                                                                         step(self, opt, xb, idx))[1])
    evaluate = vc.evaluate
    monkeypatch.setattr(vc.training, "evaluate", lambda model, data, **kw: (evaluated.append(data.clone()),
                                                                   evaluate(model, data, **kw))[1])
    grey = torch.cat([torch.full((50, 12), 0.3), torch.full((50, 12), 0.7)])  # thresholding would give 0 and 1
    vc.train(small_model(), grey, "aevb", epochs=20, batch_size=20, dynamic_binarization=True, eval_at=[500, 1000],
             device="cpu")
    assert len(steps) == 100 and len(evaluated) == 3
    draws = torch.zeros(100, 12)
    for xb, idx in steps:
        assert set(xb.unique().tolist()) <= {0.0, 1.0}
        draws.index_add_(0, idx, xb)
    draws /= 20  # each point's 20 draws, averaged per pixel: its grey level, not one draw repeated
    assert (draws - grey).abs().mean() < 0.15, (draws - grey).abs().mean()
    assert all(set(data.unique().tolist()) == {0.0, 1.0} for data in evaluated)
    assert all(torch.equal(data, evaluated[0]) for data in evaluated)  # one fixed draw
    assert (evaluated[0][:50].mean() - 0.3).abs() < 0.06 and (evaluated[0][50:].mean() - 0.7).abs() < 0.06


# ---- the weight prior -------------------------------------------------------------------------------

def test_weight_prior_is_a_decay_of_1_over_n_on_the_learned_weight_matrices_and_shrinks_them(monkeypatch):
    """Kingma & Welling's N(0, I) prior on the parameters, on the per-datapoint objective: a weight decay of
    1/N (N training points) on the weight matrices the algorithm learns (anglepy's prior is on its `w`
    matrices, not on the biases), which pulls them towards zero."""
    optimizers = []
    make = vc.make_optimizer
    monkeypatch.setattr(vc.training, "make_optimizer", lambda *a, **kw: optimizers.append(make(*a, **kw)) or optimizers[-1])
    x = torch.bernoulli(torch.rand(5, 12).repeat(8, 1))  # N = 40
    norms = {}

    def decays(opt, model):  # {parameter name: its weight decay}
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: group["weight_decay"] for group in opt.param_groups for p in group["params"]}
    for prior in (False, True):
        torch.manual_seed(0)
        model = small_model()
        vc.train(model, x, "aevb", epochs=50, batch_size=10, optimizer="adagrad", lr=0.05, weight_prior=prior,
                 device="cpu")
        weights = [p.detach().flatten() for n, p in model.named_parameters() if n.endswith("weight")]
        norms[prior] = torch.cat(weights).norm().item()
        decay = decays(optimizers[-1], model)
        assert set(decay) == {n for n, _ in model.named_parameters()}
        assert all(d == (1 / 40 if prior and n.endswith("weight") else 0.0) for n, d in decay.items()), decay
    assert norms[True] < 0.8 * norms[False], norms
    model = small_model()
    vc.train(model, x, "mcem", samples=10, batch_size=10, weight_prior=True, device="cpu")
    decay = decays(optimizers[-1], model)  # MCEM learns the decoder alone, and its prior is on the decoder's weights
    assert set(decay) == {f"decoder.{n}" for n, _ in model.decoder.named_parameters()}
    assert all(d == (1 / 40 if n.endswith("weight") else 0.0) for n, d in decay.items()), decay


# ---- MCEM's chains ------------------------------------------------------------------------------------

def test_mcem_keeps_each_points_chain_under_shuffled_minibatches():
    """MCEM's persistent chains: the minibatch's indices, in whatever order, pick the chains it moves, and
    the chain of point i stays on p(z|x_i): after 20 shuffled epochs (decoder fixed) each chain's state
    explains its own point far better than its neighbour's."""
    torch.manual_seed(0)
    model = small_model(x_dim=40)
    x = model.sample_x(1.5 * torch.randn(60, 2))
    opt = torch.optim.SGD(model.decoder.parameters(), lr=0.0)  # the E-step alone
    # chains with step sizes so small that a transition moves each by a hair: each stays where it was
    step = vc.MCEM(model, len(x))
    step.chains["step_size"].fill_(1e-4)
    before = step.chains["z"].clone()
    idx = torch.tensor([41, 3, 17, 58, 0, 29])
    step(opt, x[idx], idx)
    moved = (step.chains["z"] != before).any(1)
    assert moved.nonzero().flatten().tolist() == sorted(idx.tolist())  # the minibatch's chains, and only those
    assert (step.chains["z"] - before).abs().max() < 0.01  # ... each from its own state
    step = vc.MCEM(model, len(x))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 12):
            step(opt, x[order[i:i + 12]], order[i:i + 12])
    with torch.no_grad():
        log_joint = estimators.log_joint_fn(model, x)
        z = step.chains["z"]
        assert (log_joint(z) - log_joint(z.roll(1, 0))).mean() > 5.0


# ---- the HMC estimator from given chain states ------------------------------------------------------------

def test_hmc_log_likelihood_starts_its_chains_from_the_given_states():
    """With no burn-in the chains start where z_init says: from posterior draws the estimate matches the
    quadrature, from a far corner of the latent space it is another, worse estimate."""
    torch.manual_seed(2)
    model = small_model(x_dim=60)
    z_true = torch.randn(10, 2)
    x = model.sample_x(z_true)
    exact = exact_log_px(model, x, n=301)
    good = log_likelihood_hmc(model, x, k=200, n_burnin=0, n_hmc_samples=3, z_init=z_true) - exact
    bad = log_likelihood_hmc(model, x, k=200, n_burnin=0, n_hmc_samples=3, z_init=torch.full((10, 2), 4.0)) - exact
    assert good.abs().max() < 0.1, good
    assert bad.abs().max() > 3 * good.abs().max(), (good, bad)


# ---- wake-sleep's sleep phase -------------------------------------------------------------------------

def test_sleep_phase_trains_the_encoder_and_beats_the_same_run_without_it(mnist_subset):
    """Wake-sleep against the same run with its encoder frozen (the wake phase alone, the same draws): the
    sleep phase is what makes q(z|x) informative (KL > 1 nat) and the test bound higher."""
    x, xt = mnist_subset
    results = {}
    for sleep in (True, False):
        torch.manual_seed(1)
        model = vc.VAE(784, 5, hidden=(100,))
        model.encoder.requires_grad_(sleep)
        history = vc.train(model, x, "wake_sleep", epochs=6, lr=1e-2, seed=1, test_x=xt[:500], eval_at=[],
                           device="cpu")
        results[sleep] = history[-1]
    assert all(math.isfinite(v) for row in results.values() for v in row.values())
    assert results[True]["test_kl"] > 1 and results[False]["test_kl"] < 0.01
    assert results[True]["test_elbo"] > results[False]["test_elbo"] + 5, results


# ---- resuming ---------------------------------------------------------------------------------------------

def test_a_resumed_run_trains_only_the_samples_after_its_checkpoint(tmp_path, monkeypatch):
    """Training is deterministic from the seed, so a restart would end with the same numbers as a resume:
    what tells them apart is the work done. Resumed from its checkpoint at 600 samples, a run of 1200
    makes the 12 remaining steps of 50, and logs only the evaluation after the checkpoint anew."""
    steps = []
    step = vc.AEVB.__call__
    monkeypatch.setattr(vc.AEVB, "__call__", lambda self, opt, xb, idx: steps.append(len(xb)) or step(self, opt, xb, idx))
    x = torch.bernoulli(torch.full((200, 12), 0.3))
    kwargs = dict(batch_size=50, eval_at=[300, 900], device="cpu")
    ckpt = tmp_path / "checkpoint.pt"
    first = vc.train(small_model(), x, "aevb", samples=650, checkpoint=Checkpoint(ckpt, every=200), **kwargs)
    assert torch.load(ckpt, weights_only=False)["samples_seen"] == 600 and len(steps) == 13
    steps.clear()
    resumed = vc.train(small_model(), x, "aevb", samples=1200, checkpoint=Checkpoint(ckpt), **kwargs)
    assert len(steps) == 12
    assert [r["samples"] for r in resumed] == [300, 900, 1200] and resumed[0] == first[0]  # the saved row


# ---- a run's recorded config ----------------------------------------------------------------------------

OPTIONS = {  # an option a run may use -> what its config.json then records beside the base
    "log_px_points": (dict(log_px_points=10), dict(log_px_points=10, log_px_k=1000)),
    "lr_choices": (dict(lr_choices=[0.01, 0.1]), dict(lr=None, lr_choices=[0.01, 0.1], lr_trial_samples=50000)),
    "is_points": (dict(is_points=3), dict(is_points=3, is_k=5000)),
    "warmup_steps": (dict(warmup_steps=100), dict(warmup_steps=100)),
    "mcem_updates": (dict(algorithm="mcem", mcem_updates=5), dict(algorithm="mcem", mcem_updates=5)),
    "init": (dict(init="glorot"), dict(init="glorot", init_std=None)),
    "lr_schedule": (dict(lr_schedule="burda"), dict(lr_schedule="burda")),
    "adam_eps": (dict(adam_eps=1e-4), dict(adam_eps=1e-4)),
    "refit_samples": (dict(is_points=3, refit_samples=1000), dict(is_points=3, is_k=5000, refit_samples=1000)),
    "appd_points": (dict(appd_points=50), dict(appd_points=5)),  # at most the test set's 5 points
}


@pytest.mark.parametrize("option", OPTIONS)
def test_a_run_records_an_option_only_when_it_uses_it(option):
    """config.json decides whether a finished run is reused: an option enters it only when the run uses
    it, so that adding an option to the project leaves every run that does not use it as it was."""
    from aevb.experiment import RunConfig, saved_config
    from test_experiment import notebook_defaults
    train_x, test_x = torch.zeros(10, 3), torch.zeros(5, 3)
    base = saved_config(RunConfig.from_namespace(notebook_defaults()), train_x, test_x, "bernoulli")
    assert not set(base) & {*OPTIONS, "log_px_k", "lr_trial_samples", "is_k"}
    changed, recorded = OPTIONS[option]
    saved = saved_config(RunConfig.from_namespace({**notebook_defaults(), **changed}), train_x, test_x, "bernoulli")
    assert saved == {**base, **recorded}
