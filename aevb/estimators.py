"""log p(x) per datapoint, estimated: by importance sampling with the encoder as proposal (Burda et
al., 2015), and without an encoder from HMC posterior samples (after Kingma & Welling, App. D).

Both run on their own seeded RNG stream, so estimating never changes a training run's numbers.
"""
import math

import torch

from vae_core import HMC_INIT_STEP_SIZE, hmc, log_joint_fn, log_normal, log_standard_normal, seeded_rng


@torch.inference_mode()
def log_likelihood(model, x, k=5000, seed=0, max_elements=1 << 20):
    """Importance-sampled log p(x) per datapoint with q(z|x) as proposal (Burda et al., 2015):
    log (1/k) sum_i p(x, z_i) / q(z_i|x). Works in chunks of samples and datapoints so that memory
    stays near `max_elements` floats whatever k and N; a running logsumexp combines the chunks.
    Returns a float64 tensor [N] on the CPU.
    """
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
                eps = torch.randn((min(n_draws, k - j), *z_loc.shape), device=device)
                z = z_loc + torch.exp(0.5 * z_logvar) * eps
                log_w = (model.log_px_given_z(xb, model.decode(z)) + log_standard_normal(z)
                         - log_normal(z, z_loc, z_logvar))
                log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w.double(), dim=0))
            out.append((log_sum_w - math.log(k)).cpu())
    return torch.cat(out)


def log_likelihood_hmc(model, x, k=1000, n_chains=4, n_burnin=100, n_hmc_samples=25, z_init=None,
                       proposal_scale=1.5, prior_weight=0.1, seed=0, max_elements=1 << 22):
    """log p(x) per datapoint without an encoder, after Kingma & Welling's Appendix D (for small Nz):

    1. posterior samples by HMC: n_chains chains per point on p(z|x) ∝ p(x|z) p(z), started from
       the prior (or from z_init [N, Nz], e.g. MCEM's chain states), n_burnin transitions with step
       sizes tuned to ~90% acceptance, then n_hmc_samples transitions with fixed step sizes, each
       state kept;
    2. a proposal fitted to those samples: r(z) = (1 - prior_weight) N(z; mean, proposal_scale^2 cov)
       + prior_weight p(z), a widened Gaussian mixed with the prior (defensive importance sampling,
       Hesterberg 1995), so that every weight p(x, z) / r(z) <= p(x|z) / prior_weight stays bounded;
    3. log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / r(z_i), z_i ~ r.
    Appendix D plugs the fitted density into the harmonic-mean-like identity
    1/p(x) = E_{p(z|x)}[q(z) / p(x, z)] with new posterior samples; importance sampling from r instead
    gives an unbiased estimate of p(x) whose weights cannot blow up. Works in chunks of datapoints
    (and of draws) so that memory stays near `max_elements` floats. Uses its own seeded RNG.
    Returns a float64 tensor [N] on the CPU.
    """
    if min(k, n_chains, n_hmc_samples) < 1 or n_burnin < 0 or not 0 < prior_weight < 1:
        raise ValueError(f"need k, n_chains, n_hmc_samples >= 1, n_burnin >= 0 and 0 < prior_weight < 1 "
                         f"(got {k}, {n_chains}, {n_hmc_samples}, {n_burnin}, {prior_weight})")
    if z_init is not None and tuple(z_init.shape) != (len(x), model.z_dim):
        raise ValueError(f"z_init has shape {tuple(z_init.shape)}, expected {(len(x), model.z_dim)}")
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
            z, _, step_size = hmc(log_joint, z, HMC_INIT_STEP_SIZE, n_transitions=n_burnin, adapt=True)
            samples = []
            for _ in range(n_hmc_samples):
                z, _, _ = hmc(log_joint, z, step_size)
                samples.append(z)
            samples = torch.cat(samples).transpose(0, 1).double()  # [B, n_hmc_samples * n_chains, Nz]
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
                    whitened = torch.linalg.solve_triangular(scale_tril, (z - z_loc).unsqueeze(-1), upper=False)
                    log_fitted = log_standard_normal(whitened.squeeze(-1)) - log_det
                    log_r = torch.logaddexp(math.log1p(-prior_weight) + log_fitted,
                                            math.log(prior_weight) + log_standard_normal(z))
                    log_w = log_joint(z) - log_r
                    log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w.double(), dim=0))
            out.append((log_sum_w - math.log(k)).cpu())
    return torch.cat(out)

