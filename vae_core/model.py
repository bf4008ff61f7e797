"""The model and its objectives: the VAE (Gaussian encoder q(z|x), standard normal prior, Bernoulli
or Gaussian decoder), the ELBO, the IWAE bound, wake-sleep's two losses, and Hamiltonian Monte Carlo
(MCEM's E-step and the encoder-free estimators' sampler). Every per-datapoint quantity is in
nats."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)
# how the encoder's output layer starts and scales: the paper's (every parameter N(0, 0.01)), as
# anglepy's wake-sleep recognition model, or as anglepy's AEVB model (below, in VAE.__init__)
RECOGNITION = ("paper", "anglepy", "anglepy-va")
INITS = ("normal", "glorot")
LIKELIHOODS = ("bernoulli", "gaussian")
# where each chain's step size starts; adaptation tunes it within ~30 transitions
HMC_INIT_STEP_SIZE = 0.1
# anglepy, wzoptim.py: step_batch_mcem's hmc_stepsize, where hmc_step_autotune starts
HMC_GLOBAL_INIT_STEP_SIZE = 1e-2

# ==== Model =======================================================================================
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(sizes, activation):
    """Linear layers of these sizes, the activation between them."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1])


class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard normal prior p(z), Bernoulli or Gaussian decoder p(x|z)."""

    def __init__(self, x_dim, z_dim, hidden=(500,), activation="tanh", likelihood="bernoulli",
                 init_std=0.01, init="normal", recognition="paper"):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        allowed = {"activation": sorted(ACTIVATIONS), "likelihood": list(LIKELIHOODS),
                   "init": list(INITS), "recognition": list(RECOGNITION)}
        for name, value in zip(allowed, (activation, likelihood, init, recognition)):
            if value not in allowed[name]:
                raise ValueError(f"{name}={value!r}: expected one of {allowed[name]}")
        if min(x_dim, z_dim, *hidden) < 1 or not hidden:
            raise ValueError("x_dim, z_dim and every hidden size must be >= 1 "
                             f"(got {x_dim}, {z_dim}, {hidden})")
        self.config = dict(x_dim=x_dim, z_dim=z_dim, hidden=list(hidden), activation=activation,
                           likelihood=likelihood, init_std=init_std, init=init,
                           recognition=recognition)
        self.x_dim = x_dim
        self.z_dim = z_dim
        self.likelihood = likelihood
        x_out = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.encoder = mlp([x_dim, *hidden, 2 * z_dim], activation)  # recognition model, phi
        self.decoder = mlp([z_dim, *hidden[::-1], x_out], activation)  # generative model, theta
        for name, p in self.named_parameters():
            if init == "normal":  # Kingma & Welling, Sec. 5: initialized N(0, 0.01), a std
                nn.init.normal_(p, 0.0, init_std)
            elif name.endswith("weight"):  # Burda et al., Sec. 5.1: Glorot & Bengio's heuristic
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
        # the scale of the encoder's output weights: 1, or as anglepy's wake-sleep recognition model
        # (models/MLBN_Inverse.py): log-variance = 0.1 * w_logvar h + b_logvar, both from zero
        # (`init_w`)
        self.register_buffer("row_scale", torch.ones(2 * z_dim, 1), persistent=False)
        if recognition == "anglepy":
            self.row_scale[z_dim:] = 0.1
        if recognition in ("anglepy", "anglepy-va"):
            nn.init.zeros_(self.encoder[-1].weight[z_dim:])
            nn.init.zeros_(self.encoder[-1].bias[z_dim:])
        # anglepy's AEVB model (models/MLEM.py, `DLVM.init_w`, which wzoptim.py's `step_va` trains):
        # the log-variance layer from zero, no scale, and the decoder's output biases (`out_b`,
        # `out_logvar_b`) from zero; every other parameter N(0, 0.01)
        if recognition == "anglepy-va":
            nn.init.zeros_(self.decoder[-1].bias)

    def encode(self, x):  # (z_loc, z_logvar)
        out = self.encoder[-1]
        h = self.encoder[:-1](x)
        return F.linear(h, out.weight * self.row_scale, out.bias).chunk(2, dim=-1)

    def decode(self, z):
        """Bernoulli: logits. Gaussian: (x_loc, x_logvar), the mean through a sigmoid (paper,
        Sec. 5)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return out
        x_loc, x_logvar = out.chunk(2, dim=-1)
        return torch.sigmoid(x_loc), x_logvar

    def log_px_given_z(self, x, decoded):
        """log p(x|z) summed over pixels; for grey-level x the Bernoulli case is the negated
        BCE."""
        if self.likelihood == "bernoulli":  # x log sigmoid(l) + (1 - x) log sigmoid(-l), stably
            return (x * decoded - F.softplus(decoded)).sum(-1)
        return log_normal(x, *decoded)

    def sample_x(self, z):
        """x ~ p(x|z): Bernoulli or Gaussian draws (wake-sleep's dreams)."""
        decoded = self.decode(z)
        if self.likelihood == "bernoulli":
            return bernoulli(torch.sigmoid(decoded))
        return normal_sample(*decoded)

    def mean_x(self, z):
        """E[x|z], what the figures show."""
        decoded = self.decode(z)
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded[0]

    def elbo(self, x, n_samples=1):
        """Per-datapoint SGVB estimate (paper, Eq. 10) with L = n_samples draws:
        (elbo, E_q log p(x|z), KL(q||p))."""
        z_loc, z_logvar = self.encode(x)
        z = normal_sample(z_loc, z_logvar, n_samples)
        log_px_given_z = self.log_px_given_z(x, self.decode(z)).mean(0)
        kl = kl_to_standard_normal(z_loc, z_logvar)
        return log_px_given_z - kl, log_px_given_z, kl


def normal_sample(loc, logvar, n_samples=None):
    """loc + exp(logvar / 2) * eps, eps ~ N(0, I): the reparameterised draw from
    N(loc, exp(logvar)), of loc's shape, or n_samples of them [n_samples, *loc.shape]."""
    shape = loc.shape if n_samples is None else (n_samples, *loc.shape)
    return loc + torch.exp(0.5 * logvar) * torch.randn(shape, device=loc.device, dtype=loc.dtype)


def bernoulli(probs):
    """x ~ Bernoulli(probs) as u < p, u ~ U(0, 1): torch.bernoulli's law, ~3x faster on the CPU."""
    return (torch.rand_like(probs) < probs).to(probs.dtype)


def kl_to_standard_normal(z_loc, z_logvar):
    """KL(N(z_loc, exp(z_logvar)) || N(0, I)) per datapoint, analytically (Kingma & Welling,
    App. B)."""
    return 0.5 * (z_loc.pow(2) + z_logvar.exp() - 1 - z_logvar).sum(-1)


def log_normal(z, loc, logvar):
    return -0.5 * (LOG_2PI + logvar + (z - loc).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z):
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


# ==== The objectives beside the ELBO (VAE.elbo) ===================================================
def iwae_bound(model, x, k):
    """Per-datapoint k-sample importance-weighted bound (Burda et al., 2015, Eq. 8):
    log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) reparameterized; k = 1 is the ELBO."""
    z_loc, z_logvar = model.encode(x)
    z = normal_sample(z_loc, z_logvar, k)
    log_w = (model.log_px_given_z(x, model.decode(z)) + log_standard_normal(z)
             - log_normal(z, z_loc, z_logvar))
    return torch.logsumexp(log_w, 0) - math.log(k)


def wake_sleep_losses(model, x, n_samples=1):
    """(wake_loss, sleep_loss, log p(x|z), KL) of wake-sleep (Hinton et al., 1995). Wake: z ~ q(z|x)
    without a gradient path, so the loss -[log p(x|z) + log p(z)] reaches only the decoder (theta).
    Sleep: dreams z ~ p(z), x ~ p(x|z), so the loss -log q(z|x) reaches only the encoder (phi)."""
    with torch.no_grad():
        z_loc, z_logvar = model.encode(x)
        z = normal_sample(z_loc, z_logvar, n_samples)
        kl = kl_to_standard_normal(z_loc, z_logvar)
    log_px_given_z = model.log_px_given_z(x, model.decode(z)).mean(0)
    with torch.no_grad():
        z_dream = torch.randn((len(x) * n_samples, model.z_dim), device=x.device)
        x_dream = model.sample_x(z_dream)
    sleep_loss = -log_normal(z_dream, *model.encode(x_dream)).mean()
    return -log_px_given_z.mean(), sleep_loss, log_px_given_z.detach(), kl  # the wake loss first


# ==== Hamiltonian Monte Carlo: MCEM's E-step, and the encoder-free estimator's sampler ============
def _log_density_and_grad(log_density, z):
    with torch.enable_grad():  # also under no_grad: HMC needs d log p / dz
        z = z.detach().requires_grad_(True)
        log_p = log_density(z)
        (grad,) = torch.autograd.grad(log_p.sum(), z)
    return log_p.detach(), grad


def global_step_size(step_size, accepted, target_accept=0.9):
    """anglepy's one step size for all chains (hmc.py: `hmc_step_autotune`): divided by
    min(1.25, 1.02^min(100, n_chains)) where the fraction of chains that accepted (`accepted`,
    bool [...]) is below the target, else multiplied."""
    factor = min(1.25, 1.02 ** min(100, accepted.numel()))
    below = accepted.to(step_size.dtype).mean() < target_accept
    return torch.where(below, step_size / factor, step_size * factor)


def hmc(log_density, z, step_size, n_transitions=1, n_leapfrog=10, adapt=False, target_accept=0.9,
        adapt_rate=1.0):
    """Hamiltonian Monte Carlo (Neal, 2011) for a batch of independent chains z [..., Nz].
    log_density: z -> [...], each chain's unnormalized log target (gradients by autograd: not under
    inference_mode). step_size: a float or [...]. A transition draws momentum p ~ N(0, I), makes
    n_leapfrog leapfrog steps and accepts with probability min(1, exp(-dH)). adapt: then multiply
    each step size by exp(adapt_rate * (accept_prob - target_accept)), which settles the acceptance
    near target_accept within ~30 transitions (App. E: 10 leapfrog steps, ~90%), at the cost of
    exact invariance; "global": one for all chains (`global_step_size`). Returns (z, mean
    acceptance probability [...], step_size [...]), detached."""
    z = z.detach()
    step_size = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    step_size = step_size.expand(z.shape[:-1]).clone()
    log_p, grad = _log_density_and_grad(log_density, z)
    accept_prob_sum = torch.zeros_like(log_p)
    for _ in range(n_transitions):
        eps = step_size.unsqueeze(-1)
        momentum = torch.randn_like(z)
        z_new, p = z, momentum + 0.5 * eps * grad  # leapfrog: half step, full steps, half step
        for i in range(n_leapfrog):
            z_new = z_new + eps * p
            log_p_new, grad_new = _log_density_and_grad(log_density, z_new)
            p = p + (eps if i < n_leapfrog - 1 else 0.5 * eps) * grad_new
        # Metropolis correction for the leapfrog's energy error, H(z, p) = -log p(z) + |p|^2 / 2;
        # a non-finite proposal (a step size far too large) is rejected.
        log_accept = log_p_new - log_p - 0.5 * (p.pow(2).sum(-1) - momentum.pow(2).sum(-1))
        accept_prob = torch.nan_to_num(log_accept, nan=-math.inf).clamp(max=0).exp()
        accept = torch.rand_like(accept_prob) < accept_prob
        z = torch.where(accept.unsqueeze(-1), z_new, z)
        log_p = torch.where(accept, log_p_new, log_p)
        grad = torch.where(accept.unsqueeze(-1), grad_new, grad)
        accept_prob_sum += accept_prob
        if adapt == "global":
            step_size = global_step_size(step_size, accept, target_accept)
        elif adapt:
            step_size = step_size * torch.exp(adapt_rate * (accept_prob - target_accept))
    return z, accept_prob_sum / n_transitions, step_size
