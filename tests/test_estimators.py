"""The log p(x) estimators against exact values by quadrature (Nz = 2), and their refusals."""
import math

import numpy as np
import pytest
import torch

import vae_core as vc
from aevb.estimators import (_log_fitted_density, log_likelihood, log_likelihood_appendix_d, log_likelihood_hmc,
                             log_likelihood_refit)
from conftest import exact_log_px, small_model


# HMC makes many tiny autograd calls: on a busy machine one thread is several times faster than two
pytestmark = pytest.mark.usefixtures("one_thread")


def test_elbo_below_importance_sampled_log_likelihood_and_k1_averages_to_elbo():
    model = small_model()
    x = torch.bernoulli(torch.full((8, 12), 0.3))
    elbo = model.elbo(x, n_samples=20_000)[0].detach()
    log_px = log_likelihood(model, x, k=20_000)
    assert torch.all(elbo <= log_px.float() + 1e-3)
    assert (log_px.float() - elbo).mean() > 0.01  # a real gap, so the check above means something
    # With k = 1 the estimator is log p(x, z) - log q(z|x) for one z ~ q: its mean is the ELBO.
    reps = 20_000
    k1 = log_likelihood(model, x.repeat(reps, 1), k=1).view(reps, len(x))
    stderr = k1.std(0) / math.sqrt(reps)
    assert torch.all((k1.mean(0) - elbo.double()).abs() < 4 * stderr + 0.02)


def test_log_likelihood_matches_quadrature_whatever_the_chunking():
    model = small_model()
    data = torch.bernoulli(torch.rand(4, 12).repeat(500, 1))
    vc.train(model, data, "aevb", epochs=20, lr=1e-2)  # so that q is a fair proposal
    x = data[:30]
    exact = exact_log_px(model, x)
    whole = log_likelihood(model, x, k=5000)
    chunked = log_likelihood(model, x, k=5000, max_elements=500)  # 30 points x 1 draw per chunk
    assert whole.shape == chunked.shape == (30,)
    assert (whole - exact).abs().max() < 0.05
    assert (chunked - exact).abs().max() < 0.05


def test_hmc_log_likelihood_matches_quadrature_whatever_the_chunking():
    torch.manual_seed(1)
    model = small_model()
    # points the model explains well and points it does not (broad, skewed posteriors)
    x = torch.cat([model.sample_x(torch.randn(15, 2)), torch.bernoulli(torch.full((15, 12), 0.3))])
    exact = exact_log_px(model, x, n=301)  # 301 vs 601 grid points: 2e-5 nats apart here
    whole = log_likelihood_hmc(model, x, k=5000)
    chunked = log_likelihood_hmc(model, x, k=5000, max_elements=800)  # 2 chunks of points, 4 draws at a time
    assert whole.dtype == torch.float64 and whole.shape == chunked.shape == (30,)
    assert (whole - exact).abs().max() < 0.05, (whole - exact).abs().max()
    assert (chunked - exact).abs().max() < 0.05, (chunked - exact).abs().max()
    assert torch.equal(log_likelihood_hmc(model, x[:5], k=500, n_burnin=30),
                       log_likelihood_hmc(model, x[:5], k=500, n_burnin=30))  # its own seeded RNG


def trained_small_model_value(_cache={}):
    """A small model (Nz = 2) trained on four patterns, so that q(z|x) is a fair proposal; made once."""
    if _cache:
        return _cache["value"]
    torch.manual_seed(1)
    model = small_model()
    data = torch.bernoulli(torch.rand(4, 12).repeat(500, 1))
    vc.train(model, data, "aevb", epochs=20, lr=1e-2)
    _cache["value"] = model, data
    return model, data


def test_appendix_d_estimator_matches_quadrature():
    """Kingma & Welling's App. D estimator (L = 50, 4 leapfrog steps, KDE on one half, the harmonic form
    on the other) has no bias one can see at Nz = 2, and about 0.4 nats of noise per point."""
    model, data = trained_small_model_value()
    x = data[:40]
    exact = exact_log_px(model, x)
    runs = torch.stack([log_likelihood_appendix_d(model, x, seed=s) for s in range(6)])  # [6, 40]
    assert runs.dtype == torch.float64 and runs.shape == (6, 40)
    error = runs - exact
    assert error.mean().abs() < 0.1, error.mean()  # over 240 estimates: the sd of this mean is ~0.03
    assert (error.mean(0)).abs().max() < 0.8  # every point, averaged over 6 seeds
    assert error.std() > 0.05  # a real Monte Carlo estimate, not the quadrature in disguise
    assert torch.equal(runs[0], log_likelihood_appendix_d(model, x, seed=0))  # its own seeded RNG
    # too few samples per dimension for a KDE: the released code's diagonal Gaussian (6 fitted samples)
    diagonal = log_likelihood_appendix_d(model, x, n_samples=12, seed=0)
    assert (diagonal - exact).mean().abs() < 0.5
    # samples in a lower-dimensional subspace, where scipy's KDE is undefined: the diagonal Gaussian, said so
    fit = np.stack([np.linspace(0, 1, 25), np.zeros(25)], 1)
    with pytest.warns(RuntimeWarning, match="singular covariance"):
        log_q = _log_fitted_density(fit, fit + 0.01)
    assert np.all(np.isfinite(log_q))


def test_refitted_encoder_judges_a_decoder_whatever_its_own_encoder():
    model, data = trained_small_model_value()
    x = data[:20]
    exact = exact_log_px(model, x)
    spoiled = vc.VAE(**model.config)  # the same decoder behind a useless encoder
    spoiled.decoder.load_state_dict(model.decoder.state_dict())
    with torch.no_grad():
        spoiled.encoder[-1].bias[2:] = -8.0  # q(z|x) far narrower than the posterior
    own = log_likelihood(spoiled, x, k=1000)
    refit, refit_elbo = log_likelihood_refit(spoiled, data, x, samples=100_000, k=1000, lr=1e-2)
    assert (own - exact).mean() < -1.0  # its own encoder makes the decoder look worse than it is
    assert (refit - exact).abs().max() < 0.1
    assert math.isfinite(refit_elbo)
    assert torch.equal(spoiled.decoder[0].weight, model.decoder[0].weight)  # the decoder is left as it was


def test_bad_arguments_are_refused():
    x = torch.rand(3, 12)
    with pytest.raises(ValueError, match="z_init"):
        log_likelihood_hmc(small_model(), x, z_init=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="prior_weight"):
        log_likelihood_hmc(small_model(), x, prior_weight=0.0)
    with pytest.raises(ValueError, match="n_chains"):
        log_likelihood_hmc(small_model(), x, n_chains=0)
    with pytest.raises(ValueError, match="n_samples >= 4"):
        log_likelihood_appendix_d(small_model(), x, n_samples=3)


# ---- small k, where normalisation and bias show: a model whose log p(x) is known in closed form ---------------

class LinearGaussian(torch.nn.Module):
    """z ~ N(0, 1), x | z ~ N(w z + b, s^2 I) in 2 dimensions: log p(x) = log N(x; b, w w^T + s^2 I) exactly.
    Its encoder is the exact posterior N(m(x), 1 / (1 + |w|^2 / s^2)), or with exact=False the prior N(0, 1)."""
    x_dim, z_dim = 2, 1
    W, B, S = torch.tensor([1.5, -0.5]), torch.tensor([0.2, 0.1]), 0.7

    def __init__(self, exact=True):
        super().__init__()
        self.exact = exact
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # a device for the estimators

    def precision(self):
        return 1 + self.W.pow(2).sum() / self.S ** 2

    def encode(self, x):
        if not self.exact:
            return torch.zeros(len(x), 1), torch.zeros(len(x), 1)
        loc = ((x - self.B) @ self.W / self.S ** 2 / self.precision())[:, None]
        return loc, torch.full_like(loc, -math.log(self.precision()))

    def decode(self, z):
        return z * self.W + self.B, torch.full((*z.shape[:-1], 2), 2 * math.log(self.S))

    def log_px_given_z(self, x, decoded):
        return vc.log_normal(x, *decoded)

    def log_px(self, x):
        cov = torch.outer(self.W, self.W) + self.S ** 2 * torch.eye(2)
        return torch.distributions.MultivariateNormal(self.B, cov).log_prob(x).double()

    def elbo_with_the_prior_as_q(self, x):  # E_p(z)[log p(x|z)]: E (x - b - w z)^2 = |x - b|^2 + w^2 per pixel
        return -0.5 * (2 * math.log(2 * math.pi * self.S ** 2)
                       + ((x - self.B).pow(2).sum(-1) + self.W.pow(2).sum()) / self.S ** 2).double()


X_SMALL_K = torch.tensor([[0.0, 0.0], [1.5, -0.2], [-2.0, 1.0], [3.0, -1.5], [0.4, 0.9]])


@pytest.mark.parametrize("k", [1, 2, 10])
def test_with_the_exact_posterior_as_proposal_every_k_gives_log_px_exactly(k):
    """Each importance weight p(x, z) / q(z|x) is p(x) when q is the posterior: the estimate at any k, in any
    chunking of the draws (10 = 3 + 3 + 3 + 1), and IWAE's bound are log p(x) to float precision."""
    model, x = LinearGaussian(), X_SMALL_K
    exact = model.log_px(x)
    assert (log_likelihood(model, x, k=k) - exact).abs().max() < 1e-5
    assert (log_likelihood(model, x, k=k, max_elements=30) - exact).abs().max() < 1e-5  # 3 draws a chunk
    assert (vc.iwae_bound(model, x, k).double() - exact).abs().max() < 1e-5


def test_at_small_k_the_estimate_is_unbiased_in_p_and_biased_low_in_log_p():
    """With the prior as proposal: p-hat_k is unbiased for p(x) at every k (E exp(estimate - log p) = 1), while
    log p-hat_k is low by a bias that shrinks with k: at k = 1 its mean is the ELBO (in closed form), then
    ELBO < E log p-hat_2 < E log p-hat_10 < log p(x)."""
    model, reps = LinearGaussian(exact=False), 40_000
    x = X_SMALL_K[:3]
    exact, elbo = model.log_px(x), model.elbo_with_the_prior_as_q(x)
    means = {}
    for k in (1, 2, 10):
        estimates = log_likelihood(model, x.repeat(reps, 1), k=k, seed=k).view(reps, len(x))
        ratio = (estimates - exact).exp()
        assert torch.all((ratio.mean(0) - 1).abs() < 4 * ratio.std(0) / math.sqrt(reps)), (k, ratio.mean(0))
        means[k], se = estimates.mean(0), estimates.std(0) / math.sqrt(reps)
        if k == 1:
            assert torch.all((means[1] - elbo).abs() < 4 * se), (means[1], elbo)
    assert torch.all(elbo + 0.05 < means[2]) and torch.all(means[2] + 0.05 < means[10])
    assert torch.all(means[10] < exact - 0.02)  # (the sd of each mean: ~0.002)
