"""log p(x) per datapoint, estimated:
- `log_likelihood`: importance sampling with the encoder as proposal (Burda et al., 2015);
- `log_likelihood_appendix_d`: Kingma & Welling's Appendix D estimator, as published, with no
  encoder:
  the one their Figure 3 uses for all three algorithms;
- `log_likelihood_hmc`: importance sampling from a proposal fitted to HMC posterior samples (no
  encoder);
- `log_likelihood_refit`: importance sampling with a fresh encoder fitted to the frozen decoder, so
  that
  two decoders are judged by the same procedure whatever their own encoders learned.

Each runs on its own seeded RNG stream, so estimating never changes a training run's numbers.
"""
import math
import warnings

import numpy as np
import scipy.special
import scipy.stats
import torch

import vae_core as vc
from vae_core import HMC_INIT_STEP_SIZE, hmc, log_normal, log_standard_normal, seeded_rng


def log_joint_fn(model, x):
    """z [..., N, Nz] -> log p(x|z) + log p(z) [..., N]: the unnormalized log posterior of each
    x."""
    return lambda z: model.log_px_given_z(x, model.decode(z)) + log_standard_normal(z)


@torch.inference_mode()
def log_likelihood(model, x, k=5000, seed=0, max_elements=1 << 20):
    """Importance-sampled log p(x) per datapoint with q(z|x) as proposal (Burda et al., 2015):
    log (1/k) sum_i p(x, z_i) / q(z_i|x). Works in chunks of samples and datapoints so that memory
    stays near `max_elements` floats whatever k and N; a running logsumexp combines the chunks.
    Returns a float64 tensor [N] on the CPU.
    """
    if k < 1:
        raise ValueError(f"need k >= 1 importance samples (got k={k})")
    device = next(model.parameters()).device
    n_points = max(1, min(len(x), max_elements // model.x_dim))
    n_draws = max(1, min(k, max_elements // (n_points * model.x_dim)))
    out = []
    with seeded_rng(device, seed):
        for i in range(0, len(x), n_points):
            xb = x[i:i + n_points].to(device)
            z_loc, z_logvar = model.encode(xb)
            log_sum_w = torch.full((len(xb),), -math.inf, device=device, dtype=torch.float64)
            for j in range(0, k, n_draws):
                z = vc.normal_sample(z_loc, z_logvar, min(n_draws, k - j))
                log_w = (model.log_px_given_z(xb, model.decode(z)) + log_standard_normal(z)
                         - log_normal(z, z_loc, z_logvar))
                log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w.double(), dim=0))
            out.append((log_sum_w - math.log(k)).cpu())
    return torch.cat(out)


def log_likelihood_hmc(model, x, k=1000, n_chains=4, n_burnin=100, n_hmc_samples=25, z_init=None,
                       proposal_scale=1.5, prior_weight=0.1, seed=0, max_elements=1 << 22):
    """log p(x) per datapoint without an encoder, after Kingma & Welling's Appendix D (for small
    Nz):

    1. posterior samples by HMC: n_chains chains per point on p(z|x) ∝ p(x|z) p(z), started from
       the prior (or from z_init [N, Nz], e.g. MCEM's chain states), n_burnin transitions with step
       sizes tuned to ~90% acceptance, then n_hmc_samples transitions with fixed step sizes, each
       state kept;
    2. a proposal fitted to those samples: r(z) = (1 - prior_weight) N(z; mean, proposal_scale^2
       cov)
       + prior_weight p(z), a widened Gaussian mixed with the prior (defensive importance sampling,
       Hesterberg 1995), so that every weight p(x, z) / r(z) <= p(x|z) / prior_weight stays bounded;
    3. log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / r(z_i), z_i ~ r.
    Appendix D plugs the fitted density into the harmonic-mean-like identity
    1/p(x) = E_{p(z|x)}[q(z) / p(x, z)] with new posterior samples; importance sampling from r
    instead gives an unbiased estimate of p(x) whose weights cannot blow up. Works in chunks of
    datapoints (and of draws) so that memory stays near `max_elements` floats. Uses its own seeded
    RNG. Returns a float64 tensor [N] on the CPU.
    """
    if min(k, n_chains, n_hmc_samples) < 1 or n_burnin < 0 or not 0 < prior_weight < 1:
        raise ValueError(
            f"need k, n_chains, n_hmc_samples >= 1, n_burnin >= 0 and 0 < prior_weight < 1 "
            f"(got {k}, {n_chains}, {n_hmc_samples}, {n_burnin}, {prior_weight})")
    if z_init is not None and tuple(z_init.shape) != (len(x), model.z_dim):
        raise ValueError(
            f"z_init has shape {tuple(z_init.shape)}, expected {(len(x), model.z_dim)}")
    device = next(model.parameters()).device
    n_points = max(1, min(len(x), max_elements // (n_chains * model.x_dim)))
    n_draws = max(1, min(k, max_elements // (n_points * model.x_dim)))
    eye = torch.eye(model.z_dim, device=device, dtype=torch.float64)
    out = []
    with seeded_rng(device, seed):
        for i in range(0, len(x), n_points):
            xb = x[i:i + n_points].to(device)
            log_joint = log_joint_fn(model, xb)
            # 1. HMC on the posterior, chains [n_chains, B, Nz]
            if z_init is None:
                z = torch.randn(n_chains, len(xb), model.z_dim, device=device)
            else:
                z = z_init[i:i + n_points].to(device).expand(n_chains, -1, -1)
            z, _, step_size = hmc(log_joint, z, HMC_INIT_STEP_SIZE, n_transitions=n_burnin,
                                  adapt=True)
            samples = []
            for _ in range(n_hmc_samples):
                z, _, _ = hmc(log_joint, z, step_size)
                samples.append(z)
            # [B, n_hmc_samples * n_chains, Nz]
            samples = torch.cat(samples).transpose(0, 1).double()
            # 2. the proposal: the samples' mean and covariance (jitter keeps it positive definite)
            z_loc = samples.mean(1)
            centered = samples - z_loc[:, None]
            z_cov = centered.transpose(1, 2) @ centered / max(1, samples.shape[1] - 1)
            scale_tril = torch.linalg.cholesky(proposal_scale ** 2 * z_cov + 1e-6 * eye).float()
            z_loc = z_loc.float()
            log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            # 3. importance sampling from r, a running logsumexp over chunks of draws
            log_sum_w = torch.full((len(xb),), -math.inf, device=device, dtype=torch.float64)
            with torch.no_grad():
                for j in range(0, k, n_draws):
                    m = min(n_draws, k - j)
                    eps = torch.randn(m, len(xb), model.z_dim, 1, device=device)
                    z = z_loc + (scale_tril @ eps).squeeze(-1)
                    from_prior = torch.rand(m, len(xb), 1, device=device) < prior_weight
                    z = torch.where(from_prior, torch.randn_like(z), z)
                    # log N(z; z_loc, L L^T) = log N(L^-1 (z - z_loc); 0, I) - log det L
                    whitened = torch.linalg.solve_triangular(scale_tril, (z - z_loc).unsqueeze(-1),
                                                             upper=False)
                    log_fitted = log_standard_normal(whitened.squeeze(-1)) - log_det
                    log_r = torch.logaddexp(math.log1p(-prior_weight) + log_fitted,
                                            math.log(prior_weight) + log_standard_normal(z))
                    log_w = log_joint(z) - log_r
                    log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w.double(), dim=0))
            out.append((log_sum_w - math.log(k)).cpu())
    return torch.cat(out)



@torch.no_grad()  # not inference_mode: HMC takes gradients from these states
def encoder_sample(model, x, seed=0):
    """z ~ q(z|x) [N, Nz], one per point on its own seeded stream: where App. D's chains start under
    appd_start="encoder", this project's alternative. (anglepy's `ll_estimator`, hmc_est.py, starts
    them from the prior: it calls `gen_xz` of a generative model, models/MLBN.py, which draws z ~
    N(0, I).)"""
    device = next(model.parameters()).device
    with seeded_rng(device, seed):
        z_loc, z_logvar = model.encode(x.to(device))
        return vc.normal_sample(z_loc, z_logvar)


def log_likelihood_appendix_d(model, x, n_samples=50, n_leapfrog=4, n_burnin=100, z_init=None,
                              seed=0, max_points=1000, return_chains=False):
    """log p(x) per datapoint by Kingma & Welling's Appendix D estimator, with App. E's settings
    (L = 50 posterior samples per point, HMC with 4 leapfrog steps), after the released code
    (anglepy, hmc_est.py: `estimate_mcmc_likelihood`, which `ll_estimator` calls):

    1. L posterior samples z_l ~ p(z|x) by HMC: one chain per point, started from z_init [N, Nz]
       (None: the prior), n_burnin transitions whose step size is tuned to ~90% acceptance, then L
       transitions at that step size, each state kept (the burn-in length is ours: the paper does
       not give it). Where the chain starts decides which mode of a multimodal posterior it samples:
       `ll_estimator` starts it from the prior (models/MLBN.py's `gen_xz` draws z ~ N(0, I)) and
       keeps it across calls (pass the last call's chains, `return_chains`, as z_init);
    2. a density q(z) fitted to the first half of the samples: scipy.stats.gaussian_kde (Scott's
       bandwidth; their default, method='kde2', picks a multiple of it by held-out likelihood:
       `kde_infer_factor`), or a diagonal Gaussian when Nz = 1 or the half holds fewer than 4
       samples per dimension (L = 50 and Nz >= 7), their rule, or when the samples span fewer than
       Nz dimensions (a chain that hardly moved, where the KDE is undefined: a RuntimeWarning says
       so);
    3. on the second half, 1/p(x) ~= (1/L') sum_l q(z_l) / (p(x|z_l) p(z_l)) (App. D), since
       E_p(z|x)[q(z) / p(x, z)] = 1/p(x) for any normalized q.
    It errs high where q has heavier tails than the posterior, and low where the chain misses modes
    of a multimodal posterior (q then covers one mode; see notebooks/marginal_likelihood.ipynb).
    Returns a float64 tensor [N] on the CPU; with return_chains, also the chains' last states [N,
    Nz] (to start the next call from, as `ll_estimator` does).
    """
    if n_samples < 4 or n_leapfrog < 1 or n_burnin < 0:
        raise ValueError(f"need n_samples >= 4, n_leapfrog >= 1 and n_burnin >= 0 "
                         f"(got {n_samples}, {n_leapfrog}, {n_burnin})")
    if z_init is not None and tuple(z_init.shape) != (len(x), model.z_dim):
        raise ValueError(
            f"z_init has shape {tuple(z_init.shape)}, expected {(len(x), model.z_dim)}")
    device = next(model.parameters()).device
    n_fit = n_samples // 2
    out, last = [], []
    with seeded_rng(device, seed):
        for i in range(0, len(x), max_points):
            xb = x[i:i + max_points].to(device)
            log_joint = log_joint_fn(model, xb)
            # drawn either way: the same stream after it
            z = torch.randn(len(xb), model.z_dim, device=device)
            if z_init is not None:
                z = z_init[i:i + max_points].to(device=device, dtype=z.dtype)
            z, _, step_size = hmc(log_joint, z, HMC_INIT_STEP_SIZE, n_transitions=n_burnin,
                                  n_leapfrog=n_leapfrog, adapt=True)
            samples, log_joints = [], []
            for _ in range(n_samples):
                z, _, _ = hmc(log_joint, z, step_size, n_leapfrog=n_leapfrog)
                samples.append(z)
                with torch.no_grad():
                    log_joints.append(log_joint(z))
            samples = torch.stack(samples, 1).double().cpu().numpy()  # [B, L, Nz]
            log_joints = torch.stack(log_joints, 1).double().cpu().numpy()  # [B, L]
            log_q = np.stack([_log_fitted_density(s[:n_fit], s[n_fit:]) for s in samples])
            log_ratio = log_q - log_joints[:, n_fit:]
            log_inv_px = scipy.special.logsumexp(log_ratio, axis=1) - math.log(n_samples - n_fit)
            out.append(torch.from_numpy(-log_inv_px))
            last.append(z.cpu())
    return (torch.cat(out), torch.cat(last)) if return_chains else torch.cat(out)


def _log_fitted_density(fit, at):
    """log q(at) [M] of the density fitted to `fit` [n, Nz] (see log_likelihood_appendix_d, step
    2)."""
    n, z_dim = fit.shape
    if z_dim > 1 and n // z_dim >= 4:
        try:
            return scipy.stats.gaussian_kde(fit.T).logpdf(at.T)
        # the samples span less than Nz dimensions (a chain that hardly moved)
        except np.linalg.LinAlgError:
            warnings.warn(
                "App. D estimator: a chain's samples have a singular covariance; its point gets "
                "the "
                "diagonal Gaussian instead of the KDE", RuntimeWarning)
    std = fit.std(0)
    # hmc_est.py: compute_logq_var
    std = np.where(std > 0, std, std[std > 0].min() if (std > 0).any() else 1000.0)
    return scipy.stats.norm.logpdf(at, fit.mean(0), std).sum(1)


def log_likelihood_refit(model, train_x, x, samples, k=1000, batch_size=100, lr=1e-3, seed=0,
                         dynamic_binarization=False):
    """log p(x) per datapoint by importance sampling (`log_likelihood`, k draws) with a fresh
    encoder fitted to `model`'s frozen decoder: a new encoder (the model's own initialization)
    trained by AEVB with Adam at `lr` for `samples` training samples of train_x, the decoder
    untouched. Two decoders judged this way are judged by the same procedure, whatever their own
    encoders learned (a wake-sleep encoder learns from dreams, not from data). The estimate is still
    a lower bound in expectation: a poorer fit makes it lower, never higher.
    Returns (log p(x) [N] float64 on the CPU, the fitted encoder's final training ELBO).
    """
    if k < 1:  # before the encoder is fitted
        raise ValueError(f"need k >= 1 importance samples (got k={k})")
    device = next(model.parameters()).device
    with seeded_rng(device, seed):
        refit = vc.VAE(**model.config).to(device)
        refit.decoder.load_state_dict(model.decoder.state_dict())
        refit.decoder.requires_grad_(False)  # the optimizer then leaves theta alone
        history = vc.train(refit, train_x, "aevb", samples=samples, batch_size=batch_size, lr=lr,
                           seed=seed, device=device, eval_at=[samples],
                           dynamic_binarization=dynamic_binarization)
    decoder = dict(model.decoder.state_dict())
    assert all(torch.equal(decoder[n], p) for n, p in refit.decoder.state_dict().items())
    refit.eval()
    return log_likelihood(refit, x, k=k, seed=seed), history[-1]["train_elbo"]
