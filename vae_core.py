"""Auto-Encoding Variational Bayes (Kingma & Welling, 2013) and its two baselines, wake-sleep
(Hinton, Dayan, Frey & Neal, 1995) and Monte Carlo EM with HMC (Kingma & Welling, App. E): the
models, their objectives and one training loop. Data, estimators of log p(x) and run folders live
beside it, in the `aevb` package.

Conventions: every per-datapoint quantity is in nats; `elbo`, `recon` (= E_q log p(x|z)) and
`log_px` are log-likelihoods (higher is better); `kl` = KL(q(z|x) || p(z)) >= 0.
"""
import copy
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from aevb.files import atomic_save

LOG_2PI = math.log(2 * math.pi)

# Flush denormal floats to zero: x86 CPUs process them about 50x slower, and training makes them
# (Adagrad's sums and Adam's averages of squared gradients, weights decayed by the weight prior;
# Kingma's protocol trained 1.3x slower). The mode is per thread and OpenMP's worker threads keep the
# one they started with, so it is set here, before torch starts them.
torch.set_flush_denormal(True)

# ----------------------------------------------------------------------------------------------
# Model

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(sizes, activation):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard normal prior p(z), Bernoulli or Gaussian decoder p(x|z)."""

    def __init__(self, x_dim, z_dim, hidden=(500,), activation="tanh", likelihood="bernoulli",
                 init_std=0.01, init="normal"):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood={likelihood!r}: expected 'bernoulli' or 'gaussian'")
        if init not in ("normal", "glorot"):
            raise ValueError(f"init={init!r}: expected 'normal' or 'glorot'")
        if min(x_dim, z_dim, *hidden) < 1 or not hidden:
            raise ValueError(f"x_dim, z_dim and every hidden size must be >= 1 (got {x_dim}, {z_dim}, {hidden})")
        self.config = dict(x_dim=x_dim, z_dim=z_dim, hidden=list(hidden), activation=activation,
                           likelihood=likelihood, init_std=init_std, init=init)
        self.x_dim, self.z_dim, self.likelihood = x_dim, z_dim, likelihood
        x_out = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.encoder = mlp([x_dim, *hidden, 2 * z_dim], activation)  # recognition model, phi
        self.decoder = mlp([z_dim, *hidden[::-1], x_out], activation)  # generative model, theta
        for name, p in self.named_parameters():
            if init == "normal":  # Kingma & Welling, Sec. 5: parameters initialized N(0, 0.01), 0.01 a std
                nn.init.normal_(p, 0.0, init_std)
            elif name.endswith("weight"):  # Burda et al., Sec. 5.1: "the heuristic of Glorot & Bengio (2010)"
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    def encode(self, x):
        z_loc, z_logvar = self.encoder(x).chunk(2, dim=-1)
        return z_loc, z_logvar

    def decode(self, z):
        """Bernoulli: logits. Gaussian: (x_loc, x_logvar), the mean through a sigmoid (paper, App. C.2)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return out
        x_loc, x_logvar = out.chunk(2, dim=-1)
        return torch.sigmoid(x_loc), x_logvar

    def log_px_given_z(self, x, decoded):
        """log p(x|z) summed over pixels; for grey-level x the Bernoulli case is the (negated) BCE."""
        if self.likelihood == "bernoulli":  # x log sigmoid(l) + (1 - x) log sigmoid(-l), stably
            return (x * decoded - F.softplus(decoded)).sum(-1)
        x_loc, x_logvar = decoded
        return -0.5 * (LOG_2PI + x_logvar + (x - x_loc).pow(2) * torch.exp(-x_logvar)).sum(-1)

    def sample_x(self, z):
        """x ~ p(x|z): Bernoulli or Gaussian draws (wake-sleep's dreams)."""
        decoded = self.decode(z)
        if self.likelihood == "bernoulli":
            return bernoulli(torch.sigmoid(decoded))
        x_loc, x_logvar = decoded
        return x_loc + torch.exp(0.5 * x_logvar) * torch.randn_like(x_loc)

    def mean_x(self, z):
        """E[x|z], what the figures show."""
        decoded = self.decode(z)
        return torch.sigmoid(decoded) if self.likelihood == "bernoulli" else decoded[0]

    def elbo(self, x, n_samples=1):
        """Per-datapoint SGVB estimate (paper, Eq. 10): (elbo, E_q log p(x|z), KL(q||p)) with L samples."""
        z_loc, z_logvar = self.encode(x)
        eps = torch.randn((n_samples, *z_loc.shape), device=x.device, dtype=x.dtype)
        z = z_loc + torch.exp(0.5 * z_logvar) * eps  # reparameterization trick
        log_px_given_z = self.log_px_given_z(x, self.decode(z)).mean(0)
        kl = kl_to_standard_normal(z_loc, z_logvar)
        return log_px_given_z - kl, log_px_given_z, kl


def bernoulli(probs):
    """x ~ Bernoulli(probs): the same law as torch.bernoulli, drawn as u < p with u ~ U(0, 1), about
    3x faster on the CPU (wake-sleep dreams and dynamic binarization draw one per pixel per step)."""
    return (torch.rand_like(probs) < probs).to(probs.dtype)


def kl_to_standard_normal(z_loc, z_logvar):
    """KL(N(z_loc, exp(z_logvar)) || N(0, I)) per datapoint, analytically.
    See Appendix B of Kingma & Welling: -KL = 1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)."""
    return 0.5 * (z_loc.pow(2) + z_logvar.exp() - 1 - z_logvar).sum(-1)


def log_normal(z, loc, logvar):
    return -0.5 * (LOG_2PI + logvar + (z - loc).pow(2) * torch.exp(-logvar)).sum(-1)


def log_standard_normal(z):
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Objectives: one minibatch each, returning the loss to minimize and the batch's ELBO terms

def aevb_loss(model, x, n_samples=1):
    elbo, log_px_given_z, kl = model.elbo(x, n_samples)
    return -elbo.mean(), log_px_given_z.detach(), kl.detach()


def iwae_bound(model, x, k):
    """Per-datapoint k-sample importance-weighted bound (Burda et al., 2015, Eq. 8):
    log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) reparameterized; k = 1 is the ELBO."""
    z_loc, z_logvar = model.encode(x)
    z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn((k, *z_loc.shape), device=x.device, dtype=x.dtype)
    log_w = model.log_px_given_z(x, model.decode(z)) + log_standard_normal(z) - log_normal(z, z_loc, z_logvar)
    return torch.logsumexp(log_w, 0) - math.log(k)


def wake_sleep_losses(model, x, n_samples=1):
    """(wake_loss, sleep_loss, log p(x|z), KL) for Hinton et al.'s (1995) wake-sleep algorithm.

    Wake: z ~ q(z|x) drawn without a gradient path, so the wake loss -[log p(x|z) + log p(z)]
    reaches only the decoder (theta; log p(z) has no parameters). Sleep: dream z ~ p(z),
    x ~ p(x|z) without a gradient path, so the sleep loss -log q(z|x) reaches only the encoder (phi).
    """
    with torch.no_grad():
        z_loc, z_logvar = model.encode(x)
        z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn((n_samples, *z_loc.shape), device=x.device)
        kl = kl_to_standard_normal(z_loc, z_logvar)
    log_px_given_z = model.log_px_given_z(x, model.decode(z)).mean(0)
    wake_loss = -log_px_given_z.mean()
    with torch.no_grad():
        z_dream = torch.randn((len(x) * n_samples, model.z_dim), device=x.device)
        x_dream = model.sample_x(z_dream)
    sleep_loss = -log_normal(z_dream, *model.encode(x_dream)).mean()
    return wake_loss, sleep_loss, log_px_given_z.detach(), kl

# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo: MCEM's E-step, and the encoder-free estimator's sampler

def _log_density_and_grad(log_density, z):
    with torch.enable_grad():  # also under no_grad: HMC needs d log p / dz
        z = z.detach().requires_grad_(True)
        log_p = log_density(z)
        (grad,) = torch.autograd.grad(log_p.sum(), z)
    return log_p.detach(), grad


def hmc(log_density, z, step_size, n_transitions=1, n_leapfrog=10, adapt=False, target_accept=0.9,
        adapt_rate=1.0):
    """Hamiltonian Monte Carlo (Neal, 2011) for a batch of independent chains, one per row of z.

    log_density: z [..., Nz] -> [...], each chain's unnormalized log target (gradients by autograd;
    do not call this under torch.inference_mode). z [..., Nz]: the chains' states. step_size: a
    float or [...], each chain's leapfrog step size. A transition draws momentum p ~ N(0, I), makes
    n_leapfrog leapfrog steps and accepts with the Metropolis probability min(1, exp(-dH)).
    adapt: after each transition multiply each chain's step size by
    exp(adapt_rate * (accept_prob - target_accept)), which drives its acceptance rate towards
    target_accept (Kingma & Welling, App. E: 10 leapfrog steps, step size tuned to ~90% acceptance);
    from a poor start it settles within ~30 transitions.
    Adapting breaks exact invariance: use it for burn-in and MCEM, not for samples that must be exact.
    Returns (z, acceptance probability averaged over the transitions [...], step_size [...]), detached.
    """
    z = z.detach()
    step_size = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(z.shape[:-1]).clone()
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
        if adapt:
            step_size = step_size * torch.exp(adapt_rate * (accept_prob - target_accept))
    return z, accept_prob_sum / n_transitions, step_size


def log_joint_fn(model, x):
    """z [..., N, Nz] -> log p(x|z) + log p(z) [..., N]: the unnormalized log posterior of each x."""
    return lambda z: model.log_px_given_z(x, model.decode(z)) + log_standard_normal(z)


# ----------------------------------------------------------------------------------------------
# The algorithms' steps. Each is one small unit: which parameters it learns, one update on a
# minibatch (returning the sums of its two logged terms, kept on the device), and what it logs.

class AEVB:
    """Auto-Encoding VB (Kingma & Welling, Algorithm 1): ascend the SGVB estimate of the ELBO in
    encoder (phi) and decoder (theta) jointly."""
    terms = ("log p(x|z)", "KL")  # what the step's sums hold
    has_bound = True  # its encoder makes the ELBO a meaningful lower bound to evaluate

    def __init__(self, model, n_samples=1):
        self.model, self.n_samples = model, n_samples

    def parameters(self):
        return self.model.parameters()

    def __call__(self, opt, xb, idx):
        loss, log_px_given_z, kl = aevb_loss(self.model, xb, self.n_samples)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return torch.stack([log_px_given_z.sum(), kl.sum()])

    def running(self, sums, n):
        """What the training log shows of the steps since the last evaluation, per datapoint."""
        return {"running_elbo": (sums[0] - sums[1]).item() / n}

    def state_dict(self):  # what a checkpoint must keep beyond model and optimizer
        return {}

    def load_state_dict(self, state):
        pass


class WakeSleep(AEVB):
    """Wake-sleep (Hinton, Dayan, Frey & Neal, 1995), Kingma & Welling's baseline: see
    `wake_sleep_losses`. Its lower bound is evaluated with the same ELBO."""

    def __call__(self, opt, xb, idx):
        wake_loss, sleep_loss, log_px_given_z, kl = wake_sleep_losses(self.model, xb, self.n_samples)
        opt.zero_grad(set_to_none=True)
        # The two losses share no parameters (each phase's sample is drawn without a gradient path),
        # so one backward pass and one step make exactly the wake update of theta and the sleep update of phi.
        (wake_loss + sleep_loss).backward()
        opt.step()
        return torch.stack([log_px_given_z.sum(), kl.sum()])


class IWAE(AEVB):
    """The importance weighted autoencoder (Burda, Grosse & Salakhutdinov, 2015): ascend the k-sample
    bound (`iwae_bound`, k = n_samples) in encoder and decoder jointly. Its lower bound is evaluated
    with the same ELBO as the others'; its log p(x) by importance sampling."""
    terms = ("k-sample bound", "zero")

    def __call__(self, opt, xb, idx):
        bound = iwae_bound(self.model, xb, self.n_samples)
        opt.zero_grad(set_to_none=True)
        (-bound.mean()).backward()
        opt.step()
        return torch.stack([bound.detach().sum(), torch.zeros((), device=xb.device)])

    def running(self, sums, n):
        return {"running_iwae_bound": sums[0].item() / n}


HMC_INIT_STEP_SIZE = 0.1  # where each chain's step size starts; adaptation tunes it within ~30 transitions


class MCEM:
    """Monte Carlo EM (Kingma & Welling, App. E; their Figure 3 baseline). Learns the decoder only.

    E-step: move each point's persistent HMC chain on p(z|x) under the current decoder (10 leapfrog
    steps per transition, step size adapted to ~90% acceptance). M-step: `updates` gradient steps on
    theta ascending log p(x|z) + log p(z) at the chain states (log p(z) has no parameters, so only
    log p(x|z) carries a gradient); App. E makes "5 weight updates steps using the acquired sample"
    (anglepy, wzoptim.py: step_batch_mcem's m_steps=5). It has no lower bound: judge it by an
    estimated log p(x) (train's eval_fn, e.g. with aevb.estimators.log_likelihood_hmc).
    """
    terms = ("log p(x|z)", "-log p(z)")  # at the chain states
    has_bound = False

    def __init__(self, model, n_train, hmc_transitions=1, updates=1):
        self.model, self.hmc_transitions, self.updates = model, hmc_transitions, updates
        device = next(model.parameters()).device
        # one chain per training point, started from the prior
        self.chains = {"z": torch.randn(n_train, model.z_dim, device=device),
                       "step_size": torch.full((n_train,), HMC_INIT_STEP_SIZE, device=device),
                       "accept_prob": torch.full((n_train,), math.nan, device=device)}  # at its latest visit

    def parameters(self):
        return self.model.decoder.parameters()

    def __call__(self, opt, xb, idx):
        chains = self.chains
        z, accept_prob, step_size = hmc(log_joint_fn(self.model, xb), chains["z"][idx], chains["step_size"][idx],
                                        n_transitions=self.hmc_transitions, adapt=True)
        chains["z"][idx], chains["step_size"][idx], chains["accept_prob"][idx] = z, step_size, accept_prob
        for i in range(self.updates):
            log_px_given_z = self.model.log_px_given_z(xb, self.model.decode(z))
            if i == 0:  # what the log shows: the terms at the new sample, before the M-step
                logged = torch.stack([log_px_given_z.detach().sum(), -log_standard_normal(z).sum()])
            opt.zero_grad(set_to_none=True)
            (-log_px_given_z.mean()).backward()
            opt.step()
        return logged

    def running(self, sums, n):
        return {"running_log_joint": (sums[0] - sums[1]).item() / n,
                "hmc_accept_prob": self.chains["accept_prob"].nanmean().item(),  # over the chains visited
                "hmc_step_size": self.chains["step_size"].mean().item()}

    def state_dict(self):
        return {"chains": self.chains}

    def load_state_dict(self, state):
        self.chains = state["chains"]


ALGORITHMS = ("aevb", "wake_sleep", "mcem", "iwae")


# ----------------------------------------------------------------------------------------------
# Evaluation and devices

@contextmanager
def seeded_rng(device, seed):
    """Run a block on its own seeded RNG stream, then restore the caller's (CPU and `device`)."""
    devices = [] if device.type == "cpu" else [device.index or 0]
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield


@torch.inference_mode()
def evaluate(model, x, n_samples=1, batch_size=10_000, seed=0):
    """Mean ELBO, E_q log p(x|z) and KL over x (one z sample per point, like the report's test loss).

    Uses its own seeded RNG so evaluating never changes the training stream.
    """
    device = next(model.parameters()).device
    with seeded_rng(device, seed):
        totals = torch.zeros(3, device=device, dtype=torch.float64)
        for i in range(0, len(x), batch_size):
            terms = model.elbo(x[i:i + batch_size].to(device), n_samples)
            totals += torch.stack([t.sum() for t in terms]).double()
    elbo, recon, kl = (totals / len(x)).tolist()
    return {"elbo": elbo, "recon": recon, "kl": kl}


def select_device(name="auto"):
    """'auto' picks cuda, then mps, then cpu; an explicit name is honoured or refused clearly."""
    name = str(name)
    has_mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={name!r} but CUDA is not available on this machine; "
                               "use device='auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps" and not has_mps:
        raise RuntimeError(f"device={name!r} but MPS is not available on this machine; use 'auto' or 'cpu'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Training: one loop for the three algorithms

class TrainingDiverged(RuntimeError):
    pass


def log_spaced_points(total, n=20, first=10_000):
    """About n training-sample counts, log-spaced from `first` to `total` (Kingma's Figure 2 x-axis)."""
    if n <= 1:
        return [int(total)]
    first = min(first, max(1, total // 10))
    return sorted({int(round(v)) for v in np.geomspace(first, total, n)})


def make_optimizer(params, name, lr, weight_decay, device, adam_eps=1e-8):
    if name == "adam":  # fused: one kernel for all parameters (CPU, CUDA and MPS)
        return torch.optim.Adam(params, lr=lr, eps=adam_eps, weight_decay=weight_decay, fused=True)
    if name == "adagrad":  # Kingma & Welling's optimizer; its fused kernel is CPU-only
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay,
                                   fused=True if device.type == "cpu" else None)
    raise ValueError(f"optimizer={name!r}: expected 'adam' or 'adagrad'")


def _check_finite(model, sums, samples_from, samples_to, terms):
    """Raise with when and what if a training term or a parameter stopped being finite."""
    bad = [name for name, v in zip(terms, sums.tolist()) if not math.isfinite(v)]
    bad += [f"parameter {n}" for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"training diverged between {samples_from:,} and {samples_to:,} training "
                               f"samples: non-finite {', '.join(bad)}. Try a smaller learning rate.")


LR_SCHEDULES = ("constant", "burda")


def burda_stage(epoch):
    """Burda et al.'s schedule (Sec. 5.1): stage i = 0..7 lasts 3^i passes over the data at learning
    rate 0.001 * 10^(-i/7), 3280 passes in all; the stage of pass `epoch` (0-based), 7 after the end."""
    stage, end = 0, 1
    while epoch >= end and stage < 7:
        stage += 1
        end += 3 ** stage
    return stage


def train(model, train_x, algorithm="aevb", *, samples=None, epochs=None, batch_size=100, n_samples=1,
          optimizer="adam", lr=1e-3, weight_prior=False, seed=0, device="auto", eval_at=None,
          test_x=None, eval_size=10_000, dynamic_binarization=False, checkpoint_path=None,
          checkpoint_every=None, progress="lines", hmc_transitions=1, mcem_updates=1, eval_fn=None,
          warmup_steps=0, lr_schedule="constant", adam_eps=1e-8):
    """Train `model` on `train_x` [N, D] with AEVB, wake-sleep or MCEM; return the history (a list of rows).

    Budget: `samples` (training samples evaluated, Kingma's x-axis) or `epochs` (passes over train_x).
    weight_prior: add log p(theta) with p(theta) = N(0, I), i.e. weight decay 1/N on the
    per-datapoint objective (Kingma & Welling, Sec. 5). warmup_steps: minibatches whose gradients
    only feed the optimizer's statistics before the first update (Kingma's Adagrad accumulates 100
    minibatches of squared gradients first: anglepy, wzoptim.py; without it, Adagrad's first step
    moves every parameter by the full step size, lr * sign(g)). eval_at: the sample counts at which
    train (first `eval_size` points) and test lower bounds are logged; the final count is always one.
    lr_schedule: "constant", or "burda": lr * 10^(-i/7) in stage i of `burda_stage` (lr = 0.001 there);
    adam_eps: Adam's epsilon (Burda et al.: 1e-4). n_samples: the SGVB estimator's L; IWAE's k.
    MCEM has no lower bound (its encoder is unused): its rows carry the mean acceptance probability
    and step size of its chains instead; hmc_transitions: its HMC transitions per minibatch,
    mcem_updates: its decoder updates per HMC sample.
    eval_fn(model) -> dict: extra values logged at every evaluation (e.g. an estimated log p(x), see
    aevb.estimators), called in eval mode on its own seeded RNG stream.
    checkpoint_path: save model, optimizer, RNG, the step's state and history there at epoch ends (every
    `checkpoint_every` samples, default each epoch) and resume from it when it exists.
    progress: "lines" (one line per evaluation), "bar" (tqdm) or "none".
    """
    # ---- check the arguments before any work
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}: expected one of {ALGORITHMS}")
    if (samples is None) == (epochs is None):
        raise ValueError("give exactly one of samples= or epochs=")
    n_train = len(train_x)
    if not 1 <= batch_size <= n_train:
        raise ValueError(f"batch_size={batch_size} must be between 1 and the {n_train} training points")
    total = int(samples) if samples is not None else int(epochs * n_train)
    if total < batch_size or n_samples < 1 or lr <= 0:
        raise ValueError(f"need samples >= batch_size, n_samples >= 1 and lr > 0 "
                         f"(got {total}, {n_samples}, {lr})")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={lr_schedule!r}: expected one of {LR_SCHEDULES}")
    if algorithm == "mcem" and (n_samples != 1 or hmc_transitions < 1 or mcem_updates < 1):
        raise ValueError(f"mcem needs n_samples=1 (one chain state per datapoint), hmc_transitions >= 1 and "
                         f"mcem_updates >= 1 (got {n_samples}, {hmc_transitions}, {mcem_updates})")
    if algorithm != "mcem" and (hmc_transitions, mcem_updates) != (1, 1):
        raise ValueError(f"hmc_transitions and mcem_updates are MCEM's; {algorithm} takes neither")

    # ---- set up: device, seed, data, the algorithm's step, its optimizer
    device = select_device(device)
    torch.set_flush_denormal(True)  # again, for the thread train runs in (see the import-time call)
    torch.manual_seed(seed)
    model.to(device)
    train_x = train_x.to(device)
    eval_train_x = train_x[:eval_size]
    if dynamic_binarization:  # a fixed draw for the train-set bound, like the binarized test set
        eval_train_x = torch.bernoulli(eval_train_x, generator=torch.Generator(device).manual_seed(seed))
    test_x = None if test_x is None else test_x.to(device)
    points = sorted({int(p) for p in (eval_at or log_spaced_points(total)) if 0 < p < total} | {total})
    step = MCEM(model, n_train, hmc_transitions, mcem_updates) if algorithm == "mcem" else \
        {"aevb": AEVB, "wake_sleep": WakeSleep, "iwae": IWAE}[algorithm](model, n_samples)
    # the weight prior is on the parameters the step learns (MCEM: theta alone)
    opt = make_optimizer(step.parameters(), optimizer, lr, 1.0 / n_train if weight_prior else 0.0, device,
                         adam_eps)
    steps_per_epoch = n_train // batch_size  # drop the last partial batch: every step sees M points

    def lr_factor(i):  # of minibatch i (0-based): 0 during the warm-up, whose steps only feed the statistics
        decay = 10 ** (-burda_stage(i // steps_per_epoch) / 7) if lr_schedule == "burda" else 1.0
        return float(i >= warmup_steps) * decay

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor) if warmup_steps or lr_schedule != "constant" else None
    history, samples_seen, wall_offset = [], 0, 0.0
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # step.terms summed since the last evaluation
    sums_from = 0
    if checkpoint_path is not None and Path(checkpoint_path).exists():  # resume
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        step.load_state_dict(state)
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_device"] is not None:
            torch.get_device_module(device.type).set_rng_state(state["rng_device"])
        history, samples_seen, wall_offset = state["history"], state["samples_seen"], state["wall_time"]
        sums, sums_from = state["sums"].to(device), state["sums_from"]
        points = [p for p in points if p > samples_seen]
    checkpoint_every = checkpoint_every or n_train
    last_checkpoint = samples_seen
    bar = None
    if progress == "bar":
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=samples_seen, unit="sample", unit_scale=True)
    start = time.perf_counter()

    while samples_seen < total:
        order = torch.randperm(n_train, device=device)  # a fresh shuffle each epoch
        for i in range(steps_per_epoch):
            # ---- one step on a minibatch; its sums stay on the device (no host sync per step)
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = train_x.index_select(0, idx)  # 3x faster than train_x[idx] on the CPU
            if dynamic_binarization:
                xb = bernoulli(xb)
            sums += step(opt, xb, idx)
            if schedule is not None:
                schedule.step()
            samples_seen += batch_size

            # ---- evaluate and log, at the chosen sample counts
            if samples_seen >= points[0]:
                _check_finite(model, sums, sums_from, samples_seen, step.terms)
                row = {"samples": samples_seen, "epoch": samples_seen / n_train}
                model.eval()
                row.update(step.running(sums, samples_seen - sums_from))
                if step.has_bound:
                    for prefix, data in (("train", eval_train_x), ("test", test_x)):
                        if data is not None:
                            for key, value in evaluate(model, data, seed=seed).items():
                                row[f"{prefix}_{key}"] = value
                extra = {}
                if eval_fn is not None:
                    with seeded_rng(device, seed):  # whatever eval_fn draws, training's stream is untouched
                        extra = {key: float(value) for key, value in eval_fn(model).items()}
                    row.update(extra)
                model.train()
                row["wall_time"] = wall_offset + time.perf_counter() - start
                history.append(row)
                sums.zero_()
                sums_from = samples_seen
                while points and points[0] <= samples_seen:
                    points.pop(0)
                if progress == "lines":
                    print(_format_row(row, total, algorithm, extra), flush=True)
                elif bar is not None:
                    bar.update(samples_seen - bar.n)
                    bar.set_postfix({k: f"{row[k]:.2f}" for k in ("train_elbo", *extra) if k in row})
            if samples_seen >= total:
                break

        # ---- checkpoint at an epoch's end
        if checkpoint_path is not None and samples_seen < total and samples_seen - last_checkpoint >= checkpoint_every:
            _check_finite(model, sums, sums_from, samples_seen, step.terms)  # never checkpoint a diverged model
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "rng_cpu": torch.get_rng_state(),
                     "rng_device": None if device.type == "cpu" else torch.get_device_module(device.type).get_rng_state(),
                     "history": history, "samples_seen": samples_seen, "sums": sums, "sums_from": sums_from,
                     "wall_time": wall_offset + time.perf_counter() - start, **step.state_dict(),
                     "schedule": None if schedule is None else schedule.state_dict()}
            atomic_save(state, checkpoint_path)
            last_checkpoint = samples_seen
    if bar is not None:
        bar.close()
    return history


def train_aevb(model, train_x, **kwargs):
    """AEVB (see `AEVB`); keywords as in `train`."""
    return train(model, train_x, "aevb", **kwargs)


def train_wake_sleep(model, train_x, **kwargs):
    """Wake-sleep (see `WakeSleep`); keywords as in `train`."""
    return train(model, train_x, "wake_sleep", **kwargs)


def train_mcem(model, train_x, **kwargs):
    """Monte Carlo EM (see `MCEM`); keywords as in `train`."""
    return train(model, train_x, "mcem", **kwargs)


def choose_lr(model, train_x, algorithm, lrs, trial_samples, seed=0, **train_kwargs):
    """Kingma & Welling's choice of the global step size, "from {0.01, 0.02, 0.1} based on performance
    on the training set in the first few iterations": train a copy of `model` (same initialization,
    same minibatches) with each lr in `lrs` for `trial_samples` and score it by its training lower
    bound (on the first `eval_size` training points); a trial that diverges scores -inf.
    Returns (the best lr, {lr: score}). Keywords as in `train` (optimizer, weight_prior, ...).
    """
    if algorithm == "mcem":
        raise ValueError("choose_lr scores by the training lower bound, which MCEM (no encoder) does not have")
    if not lrs:
        raise ValueError("choose_lr needs at least one learning rate")
    scores = {}
    for lr in lrs:
        try:
            history = train(copy.deepcopy(model), train_x, algorithm, samples=trial_samples, lr=lr, seed=seed,
                            eval_at=[trial_samples], progress="none", **train_kwargs)
            score = history[-1]["train_elbo"]
        except TrainingDiverged:
            score = -math.inf
        scores[lr] = score if math.isfinite(score) else -math.inf
    best = max(scores, key=scores.get)  # on a tie, the first listed
    if scores[best] == -math.inf:
        raise TrainingDiverged(f"every learning rate in {list(lrs)} diverged within {trial_samples:,} samples")
    return best, scores


def _format_row(row, total, algorithm, extra=()):
    text = f"[{algorithm}] {row['samples']:>11,}/{total:,} samples  epoch {row['epoch']:6.2f}"
    if "train_elbo" in row:
        text += f"  train ELBO {row['train_elbo']:9.2f}"
    if "test_elbo" in row:
        text += f"  test ELBO {row['test_elbo']:9.2f} (recon {row['test_recon']:8.2f}, KL {row['test_kl']:6.2f})"
    if "hmc_accept_prob" in row:
        text += f"  HMC acceptance {row['hmc_accept_prob']:.2f}, step size {row['hmc_step_size']:.3g}"
    for key in extra:
        text += f"  {key} {row[key]:9.2f}"
    return text + f"  {row['wall_time']:7.1f}s"
