"""Auto-Encoding Variational Bayes (Kingma & Welling, 2013) and the algorithms it is judged against,
wake-sleep (Hinton et al., 1995), Monte Carlo EM with HMC (Kingma & Welling, App. E) and the IWAE
(Burda et al., 2015): model, objectives, HMC, a step per algorithm and one training loop; no files
(data, log p(x) estimators, run folders and checkpoints are `aevb`'s). Every per-datapoint quantity
is in nats: `elbo`, `recon` (E_q log p(x|z)) and `log_px` are log-likelihoods, `kl` >= 0 is KL(q || p).
"""
import math
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)
HMC_INIT_STEP_SIZE = 0.1  # where each chain's step size starts; adaptation tunes it within ~30 transitions
HMC_GLOBAL_INIT_STEP_SIZE = 1e-2  # anglepy, wzoptim.py: step_batch_mcem's hmc_stepsize, where hmc_step_autotune starts
LR_SCHEDULES, MINIBATCHES, RECOGNITION = ("constant", "burda"), ("epochs", "with_replacement"), ("paper", "anglepy")

# Flush denormal floats (the optimizers' squared gradients make them; x86 is ~50x slower on them) to zero.
# The mode is per thread and OpenMP's threads keep the one they start with: set it before they start.
torch.set_flush_denormal(True)

# ==== Model =================================================================================================
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(sizes, activation):  # linear layers of these sizes, the activation between them
    pairs = [(nn.Linear(n_in, n_out), ACTIVATIONS[activation]()) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    return nn.Sequential(*[layer for pair in pairs for layer in pair][:-1])


class VAE(nn.Module):
    """Gaussian encoder q(z|x), standard normal prior p(z), Bernoulli or Gaussian decoder p(x|z)."""
    def __init__(self, x_dim, z_dim, hidden=(500,), activation="tanh", likelihood="bernoulli",
                 init_std=0.01, init="normal", recognition="paper"):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        allowed = {"activation": sorted(ACTIVATIONS), "likelihood": ["bernoulli", "gaussian"],
                   "init": ["normal", "glorot"], "recognition": list(RECOGNITION)}
        for name, value in zip(allowed, (activation, likelihood, init, recognition)):
            if value not in allowed[name]:
                raise ValueError(f"{name}={value!r}: expected one of {allowed[name]}")
        if min(x_dim, z_dim, *hidden) < 1 or not hidden:
            raise ValueError(f"x_dim, z_dim and every hidden size must be >= 1 (got {x_dim}, {z_dim}, {hidden})")
        self.config = dict(x_dim=x_dim, z_dim=z_dim, hidden=list(hidden), activation=activation,
                           likelihood=likelihood, init_std=init_std, init=init, recognition=recognition)
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
        # the scale of the encoder's output weights: 1, or as anglepy's wake-sleep recognition model
        # (models/MLBN_Inverse.py): log-variance = 0.1 * w_logvar h + b_logvar, both from zero (`init_w`)
        self.register_buffer("row_scale", torch.ones(2 * z_dim, 1), persistent=False)
        if recognition == "anglepy":
            self.row_scale[z_dim:] = 0.1
            nn.init.zeros_(self.encoder[-1].weight[z_dim:]), nn.init.zeros_(self.encoder[-1].bias[z_dim:])

    def encode(self, x):  # (z_loc, z_logvar)
        out = self.encoder[-1]
        return F.linear(self.encoder[:-1](x), out.weight * self.row_scale, out.bias).chunk(2, dim=-1)

    def decode(self, z):
        """Bernoulli: logits. Gaussian: (x_loc, x_logvar), the mean through a sigmoid (paper, Sec. 5)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return out
        x_loc, x_logvar = out.chunk(2, dim=-1)
        return torch.sigmoid(x_loc), x_logvar

    def log_px_given_z(self, x, decoded):
        """log p(x|z) summed over pixels; for grey-level x the Bernoulli case is the (negated) BCE."""
        if self.likelihood == "bernoulli":  # x log sigmoid(l) + (1 - x) log sigmoid(-l), stably
            return (x * decoded - F.softplus(decoded)).sum(-1)
        return log_normal(x, *decoded)

    def sample_x(self, z):
        """x ~ p(x|z): Bernoulli or Gaussian draws (wake-sleep's dreams)."""
        decoded = self.decode(z)
        if self.likelihood == "bernoulli":
            return bernoulli(torch.sigmoid(decoded))
        return decoded[0] + torch.exp(0.5 * decoded[1]) * torch.randn_like(decoded[0])

    def mean_x(self, z):
        """E[x|z], what the figures show."""
        return torch.sigmoid(self.decode(z)) if self.likelihood == "bernoulli" else self.decode(z)[0]

    def elbo(self, x, n_samples=1):
        """Per-datapoint SGVB estimate (paper, Eq. 10): (elbo, E_q log p(x|z), KL(q||p)) with L samples."""
        z_loc, z_logvar = self.encode(x)
        z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn((n_samples, *z_loc.shape), device=x.device, dtype=x.dtype)
        log_px_given_z = self.log_px_given_z(x, self.decode(z)).mean(0)
        kl = kl_to_standard_normal(z_loc, z_logvar)
        return log_px_given_z - kl, log_px_given_z, kl


def bernoulli(probs):
    """x ~ Bernoulli(probs) as u < p, u ~ U(0, 1): torch.bernoulli's law, ~3x faster on the CPU."""
    return (torch.rand_like(probs) < probs).to(probs.dtype)


def kl_to_standard_normal(z_loc, z_logvar):
    """KL(N(z_loc, exp(z_logvar)) || N(0, I)) per datapoint, analytically (Kingma & Welling, App. B)."""
    return 0.5 * (z_loc.pow(2) + z_logvar.exp() - 1 - z_logvar).sum(-1)


def log_normal(z, loc, logvar):
    return -0.5 * (LOG_2PI + logvar + (z - loc).pow(2) * torch.exp(-logvar)).sum(-1)

def log_standard_normal(z):
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


# ==== The objectives beside the ELBO (VAE.elbo) =============================================================
def iwae_bound(model, x, k):
    """Per-datapoint k-sample importance-weighted bound (Burda et al., 2015, Eq. 8):
    log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) reparameterized; k = 1 is the ELBO."""
    z_loc, z_logvar = model.encode(x)
    z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn((k, *z_loc.shape), device=x.device, dtype=x.dtype)
    log_w = model.log_px_given_z(x, model.decode(z)) + log_standard_normal(z) - log_normal(z, z_loc, z_logvar)
    return torch.logsumexp(log_w, 0) - math.log(k)


def wake_sleep_losses(model, x, n_samples=1):
    """(wake_loss, sleep_loss, log p(x|z), KL) of wake-sleep (Hinton et al., 1995). Wake: z ~ q(z|x)
    without a gradient path, so the loss -[log p(x|z) + log p(z)] reaches only the decoder (theta).
    Sleep: dreams z ~ p(z), x ~ p(x|z), so the loss -log q(z|x) reaches only the encoder (phi)."""
    with torch.no_grad():
        z_loc, z_logvar = model.encode(x)
        z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn((n_samples, *z_loc.shape), device=x.device)
        kl = kl_to_standard_normal(z_loc, z_logvar)
    log_px_given_z = model.log_px_given_z(x, model.decode(z)).mean(0)
    with torch.no_grad():
        z_dream = torch.randn((len(x) * n_samples, model.z_dim), device=x.device)
        x_dream = model.sample_x(z_dream)
    sleep_loss = -log_normal(z_dream, *model.encode(x_dream)).mean()
    return -log_px_given_z.mean(), sleep_loss, log_px_given_z.detach(), kl  # the wake loss first


# ==== Hamiltonian Monte Carlo: MCEM's E-step, and the encoder-free estimator's sampler ======================
def _log_density_and_grad(log_density, z):
    with torch.enable_grad():  # also under no_grad: HMC needs d log p / dz
        z = z.detach().requires_grad_(True)
        log_p = log_density(z)
        (grad,) = torch.autograd.grad(log_p.sum(), z)
    return log_p.detach(), grad


def global_step_size(step_size, accepted, target_accept=0.9):
    """anglepy's one step size for all chains (hmc.py: `hmc_step_autotune`): divided by min(1.25, 1.02^min(100,
    n_chains)) where the fraction of chains that accepted (`accepted`, bool [...]) is below the target, else multiplied."""
    factor = min(1.25, 1.02 ** min(100, accepted.numel()))
    return torch.where(accepted.to(step_size.dtype).mean() < target_accept, step_size / factor, step_size * factor)


def hmc(log_density, z, step_size, n_transitions=1, n_leapfrog=10, adapt=False, target_accept=0.9,
        adapt_rate=1.0):
    """Hamiltonian Monte Carlo (Neal, 2011) for a batch of independent chains z [..., Nz]. log_density:
    z -> [...], each chain's unnormalized log target (gradients by autograd: not under inference_mode).
    step_size: a float or [...]. A transition draws momentum p ~ N(0, I), makes n_leapfrog leapfrog steps
    and accepts with probability min(1, exp(-dH)). adapt: then multiply each step size by
    exp(adapt_rate * (accept_prob - target_accept)), which settles the acceptance near target_accept
    within ~30 transitions (App. E: 10 leapfrog steps, ~90%), at the cost of exact invariance; "global": one for
    all chains (`global_step_size`). Returns (z, mean acceptance probability [...], step_size [...]), detached."""
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
        if adapt == "global":
            step_size = global_step_size(step_size, accept, target_accept)
        elif adapt:
            step_size = step_size * torch.exp(adapt_rate * (accept_prob - target_accept))
    return z, accept_prob_sum / n_transitions, step_size


# ==== The algorithms: each built as cls(model, n_train, **options); a call makes one update =================
class Algorithm:
    """What the algorithms share: their `options` (names and defaults, integers >= 1), the parameters
    they learn, whether a lower bound is worth evaluating (an encoder) and what a checkpoint keeps."""
    name, options, has_bound, saved, learns = None, {}, True, (), None  # learns: a part of the model, or all
    choices = {}  # the allowed values of an option whose default is a string

    def __init__(self, model, n_train, **options):
        self.__dict__.update(self.check(options), model=model)

    @classmethod
    def check(cls, options):  # the options with the defaults filled in, or a clear error
        for key, value in options.items():
            if key not in cls.options:
                raise ValueError(f"{cls.name} takes the options {', '.join(cls.options)}; not {key}")
            kind = f"one of {list(cls.choices[key])}" if key in cls.choices else "an integer >= 1"
            integer = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if not (value in cls.choices[key] if key in cls.choices else integer):
                raise ValueError(f"{cls.name}: {key}={value!r} must be {kind}")
        return {**cls.options, **options}

    def named_parameters(self):  # the learned part's, named within it
        return (getattr(self.model, self.learns) if self.learns else self.model).named_parameters()

    def update(self, opt, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def state_dict(self):
        return {key: getattr(self, key) for key in self.saved}

    def load_state_dict(self, state):
        self.__dict__.update(state)


class AEVB(Algorithm):
    """Auto-Encoding VB (Kingma & Welling, Algorithm 1): ascend the SGVB estimate of the ELBO with
    n_samples (their L) draws per datapoint, in encoder (phi) and decoder (theta) jointly."""
    name, options = "aevb", {"n_samples": 1}

    def __call__(self, opt, xb, idx):
        elbo, log_px_given_z, kl = self.model.elbo(xb, self.n_samples)
        self.update(opt, -elbo.mean())
        return {"log p(x|z)": log_px_given_z.detach().sum(), "KL": kl.detach().sum()}

    def log(self, sums, n):  # the row's running values: the sums over the last n datapoints, per datapoint
        return {"running_elbo": (sums["log p(x|z)"] - sums["KL"]).item() / n}


class WakeSleep(AEVB):
    """Wake-sleep, Kingma & Welling's baseline (`wake_sleep_losses`): the two losses share no parameters,
    so one backward pass and one step make the wake update of theta and the sleep update of phi."""
    name = "wake_sleep"

    def __call__(self, opt, xb, idx):
        wake_loss, sleep_loss, log_px_given_z, kl = wake_sleep_losses(self.model, xb, self.n_samples)
        self.update(opt, wake_loss + sleep_loss)
        return {"log p(x|z)": log_px_given_z.sum(), "KL": kl.sum()}


class IWAE(AEVB):
    """The importance weighted autoencoder (Burda et al., 2015): ascend `iwae_bound`, k = n_samples."""
    name = "iwae"

    def __call__(self, opt, xb, idx):
        bound = iwae_bound(self.model, xb, self.n_samples)
        self.update(opt, -bound.mean())
        return {"k-sample bound": bound.detach().sum()}

    def log(self, sums, n):
        return {"running_iwae_bound": sums["k-sample bound"].item() / n}


class MCEM(Algorithm):
    """Monte Carlo EM (Kingma & Welling, App. E; their Figure 3 baseline), of the decoder only. E-step:
    `hmc_transitions` HMC transitions (10 leapfrog steps, step size adapted to ~90% acceptance) of the
    minibatch's persistent chains on p(z|x); M-step: `updates` gradient steps on theta at the chain states
    (App. E: "5 weight updates steps using the acquired sample"). A minibatch of the whole training set is
    their batch MCEM (anglepy, wzoptim.py: `step_batch_mcem`), whose one step size for all chains is
    step_size_rule="global" (hmc.py: `hmc_step_autotune`, from 1e-2). No bound: judge it by train's eval_fn."""
    name, options, has_bound = "mcem", {"hmc_transitions": 1, "updates": 1, "step_size_rule": "per_chain"}, False
    choices = {"step_size_rule": ("per_chain", "global")}
    saved, learns = ("chains",), "decoder"

    def __init__(self, model, n_train, **options):
        super().__init__(model, n_train, **options)
        device = next(model.parameters()).device  # one chain per training point, started from the prior
        self.chains = {"z": torch.randn(n_train, model.z_dim, device=device),
                       "step_size": torch.full((n_train,), HMC_INIT_STEP_SIZE if self.step_size_rule == "per_chain"
                                               else HMC_GLOBAL_INIT_STEP_SIZE, device=device),
                       "accept_prob": torch.full((n_train,), math.nan, device=device)}  # at its latest visit

    def __call__(self, opt, xb, idx):
        log_joint = lambda z: self.model.log_px_given_z(xb, self.model.decode(z)) + log_standard_normal(z)  # noqa: E731
        adapt = True if self.step_size_rule == "per_chain" else "global"
        z, accept, step_size = hmc(log_joint, self.chains["z"][idx], self.chains["step_size"][idx],
                                   n_transitions=self.hmc_transitions, adapt=adapt)
        self.chains["z"][idx], self.chains["accept_prob"][idx] = z, accept
        self.chains["step_size"][idx if adapt is True else slice(None)] = step_size if adapt is True else step_size[0]
        for i in range(self.updates):
            log_px_given_z = self.model.log_px_given_z(xb, self.model.decode(z))
            if i == 0:  # what the log shows: the terms at the new sample, before the M-step
                sums = {"log p(x|z)": log_px_given_z.detach().sum(), "-log p(z)": -log_standard_normal(z).sum()}
            self.update(opt, -log_px_given_z.mean())
        return sums

    def log(self, sums, n):
        return {"running_log_joint": (sums["log p(x|z)"] - sums["-log p(z)"]).item() / n,
                "hmc_accept_prob": self.chains["accept_prob"].nanmean().item(),  # over the chains visited
                "hmc_step_size": self.chains["step_size"].mean().item()}


ALGORITHMS = {cls.name: cls for cls in (AEVB, WakeSleep, MCEM, IWAE)}


# ==== Evaluation ============================================================================================
@contextmanager
def seeded_rng(device, seed):
    """Run a block on its own seeded RNG stream, then restore the caller's (CPU and `device`)."""
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device.index or 0], device_type=device.type):
        torch.manual_seed(seed)
        yield


@torch.inference_mode()
def evaluate(model, x, n_samples=1, batch_size=10_000, seed=0):
    """Mean ELBO, E_q log p(x|z) and KL over x (one z per point), on its own seeded RNG stream."""
    device = next(model.parameters()).device
    with seeded_rng(device, seed):
        totals = torch.zeros(3, device=device, dtype=torch.float64)
        for i in range(0, len(x), batch_size):
            terms = model.elbo(x[i:i + batch_size].to(device), n_samples)
            totals += torch.stack([t.sum() for t in terms]).double()
    return dict(zip(("elbo", "recon", "kl"), (totals / len(x)).tolist()))


# ==== Training ==============================================================================================
class TrainingDiverged(RuntimeError):
    pass


def make_optimizer(named_params, name, lr, weight_decay, device, adam_eps=1e-8):
    """weight_decay on the weight matrices alone, as anglepy's prior (models/VAE_Z_X.py: `f_prior` of the w's).
    name: "adam", "adagrad", or a function (param groups, lr) -> an optimizer (aevb.released.IwaeAdam's, say)."""
    named_params = list(named_params)
    params = [{"params": [p for n, p in named_params if n.endswith("weight") == decay],
               "weight_decay": weight_decay * decay} for decay in (True, False)]
    if name == "adam":  # fused: one kernel for all parameters (CPU, CUDA and MPS)
        return torch.optim.Adam(params, lr=lr, eps=adam_eps, fused=True)
    if name == "adagrad":  # Kingma & Welling's optimizer; its fused kernel is CPU-only
        return torch.optim.Adagrad(params, lr=lr, fused=device.type == "cpu" or None)
    if callable(name):
        return name(params, lr)
    raise ValueError(f"optimizer={name!r}: expected 'adam', 'adagrad' or a function (params, lr) -> optimizer")


def burda_stage(epoch):
    """Burda et al.'s schedule (Sec. 5.1): stage i = 0..7 lasts 3^i passes over the data at learning
    rate 0.001 * 10^(-i/7), 3280 passes in all; the stage of pass `epoch` (0-based), 7 after the end."""
    stage, end = 0, 1
    while epoch >= end and stage < 7:
        stage += 1
        end += 3 ** stage
    return stage


def train(model, train_x, algorithm="aevb", *, samples=None, epochs=None, batch_size=100, optimizer="adam",
          lr=1e-3, adam_eps=1e-8, weight_prior=False, warmup_steps=0, lr_schedule="constant",
          minibatches="epochs", dynamic_binarization=False, seed=0, device="auto", test_x=None, eval_at=None,
          eval_size=10_000, eval_fn=None, checkpoint=None, log=None, **options):
    """Train `model` on `train_x` [N, D] with one of ALGORITHMS and its `options` (n_samples: the SGVB estimator's
    L, IWAE's k; MCEM's hmc_transitions, updates, step_size_rule); return the history, a list of rows. Budget:
    `samples` (Kingma's x-axis) or `epochs`. weight_prior: p(theta) = N(0, I), a weight decay 1/N of the weight
    matrices on the per-datapoint objective (Kingma & Welling, Sec. 5). warmup_steps: minibatches that only feed
    the optimizer's statistics (Kingma's Adagrad: 101). minibatches: "epochs" (shuffled each pass), or
    "with_replacement" (anglepy's wzoptim.py). eval_at: the sample counts of the rows (the last is one): running
    values, the bound on the first `eval_size` training points and on test_x (an algorithm with an encoder), and
    eval_fn(model, state)'s dict (state: the algorithm's, e.g. MCEM's chains), on its own RNG stream. checkpoint:
    `every` (samples; None: an epoch), `save`, `resume` (aevb.runs.Checkpoint). log(row, total): per row."""
    # ---- check the arguments before any work
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}: expected one of {list(ALGORITHMS)}")
    ALGORITHMS[algorithm].check(options)
    if (samples is None) == (epochs is None):
        raise ValueError("give exactly one of samples= or epochs=")
    n_train = len(train_x)
    total = int(samples) if samples is not None else int(epochs * n_train)
    if (not 1 <= batch_size <= min(n_train, total) or lr <= 0 or warmup_steps < 0 or lr_schedule not in LR_SCHEDULES
            or minibatches not in MINIBATCHES):
        raise ValueError(f"need 1 <= batch_size <= samples and {n_train} points, lr > 0, warmup_steps >= 0, lr_schedule in "
                         f"{LR_SCHEDULES}, minibatches in {MINIBATCHES}; got {batch_size}, {total}, {lr}, {warmup_steps}, "
                         f"{lr_schedule!r}, {minibatches!r}")

    # ---- set up: device, seed, data, the algorithm's step, its optimizer and step-size schedule
    if device == "auto":  # cuda, then mps, then cpu
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(device)
    torch.set_flush_denormal(True)  # again, for the thread train runs in (see the import-time call)
    torch.manual_seed(seed)
    model.to(device)
    train_x = train_x.to(device)
    eval_sets = {"train": train_x[:eval_size], "test": None if test_x is None else test_x.to(device)}
    if dynamic_binarization:  # a fixed draw for the train-set bound, like the binarized test set
        eval_sets["train"] = torch.bernoulli(eval_sets["train"], generator=torch.Generator(device).manual_seed(seed))
    step = ALGORITHMS[algorithm](model, n_train, **options)
    # the weight prior is on the weights the step learns (MCEM: theta's alone)
    opt = make_optimizer(step.named_parameters(), optimizer, lr, weight_prior / n_train, device, adam_eps)
    steps_per_epoch = n_train // batch_size  # drop the last partial batch: every step sees M points
    def lr_factor(i):  # minibatch i's: 0 in the warm-up (its steps only feed the optimizer's statistics)
        decay = 10 ** (-burda_stage(i // steps_per_epoch) / 7) if lr_schedule == "burda" else 1.0
        return float(i >= warmup_steps) * decay
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor) if warmup_steps or lr_schedule != "constant" else None

    # ---- resume from the checkpoint, where one was saved
    parts = {"model": model, "optimizer": opt, "schedule": schedule, "step": step}  # each has a state_dict
    run = {"history": [], "samples_seen": 0, "sums": {}, "sums_from": 0, "wall_time": 0.0}  # where the run stands
    if checkpoint is not None:
        run = checkpoint.resume(parts, run, device)
    history, samples_seen, last_checkpoint = run["history"], run["samples_seen"], run["samples_seen"]
    start = time.perf_counter() - run["wall_time"]  # so that perf_counter() - start is the run's wall time
    points = sorted({int(p) for p in eval_at or () if samples_seen < p < total} | {total})
    sums = defaultdict(lambda: torch.zeros((), device=device, dtype=torch.float64), run["sums"])  # since the last row

    while samples_seen < total:
        order = (torch.randperm(n_train, device=device) if minibatches == "epochs"  # a fresh shuffle each epoch, or
                 else torch.randint(n_train, (steps_per_epoch * batch_size,), device=device))  # with replacement
        for i in range(steps_per_epoch):
            # ---- one step on a minibatch; its sums stay on the device (no host sync per step)
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = train_x.index_select(0, idx)  # 3x faster than train_x[idx] on the CPU
            for key, value in step(opt, bernoulli(xb) if dynamic_binarization else xb, idx).items():
                sums[key] += value
            if schedule is not None:
                schedule.step()
            samples_seen += batch_size

            # ---- evaluate and log, at the chosen sample counts
            if samples_seen >= points[0]:
                check_finite(model, sums, run["sums_from"], samples_seen)
                row = history_row(step, sums, run["sums_from"], samples_seen, n_train, eval_sets, eval_fn, seed, device)
                history.append({**row, "wall_time": time.perf_counter() - start})
                if log is not None:
                    log(history[-1], total)
                sums.clear()
                run["sums_from"], points = samples_seen, [p for p in points if p > samples_seen]
            if samples_seen >= total:
                break

        # ---- checkpoint at an epoch's end, never a diverged model
        if checkpoint is not None and samples_seen < total and samples_seen - last_checkpoint >= (checkpoint.every
                                                                                                 or n_train):
            check_finite(model, sums, run["sums_from"], samples_seen)
            run.update(samples_seen=samples_seen, sums=dict(sums), wall_time=time.perf_counter() - start)
            checkpoint.save(parts, run, device)
            last_checkpoint = samples_seen
    return history


def history_row(step, sums, sums_from, samples_seen, n_train, eval_sets, eval_fn, seed, device):
    """A history row: the step's running values since sums_from, then in eval mode each set's bound and eval_fn's."""
    row, model = {"samples": samples_seen, "epoch": samples_seen / n_train}, step.model.eval()
    row.update(step.log(sums, samples_seen - sums_from))
    for prefix, data in eval_sets.items():
        if step.has_bound and data is not None:
            row.update({f"{prefix}_{key}": value for key, value in evaluate(model, data, seed=seed).items()})
    if eval_fn is not None:
        with seeded_rng(device, seed):  # whatever eval_fn draws, training's stream is untouched
            row.update({key: float(value) for key, value in eval_fn(model, step.state_dict()).items()})
    model.train()
    return row


def check_finite(model, sums, samples_from, samples_to):
    """Raise with when and what if a training term or a parameter stopped being finite."""
    bad = [name for name, v in sums.items() if not math.isfinite(v.item())]
    bad += [f"parameter {n}" for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"training diverged between {samples_from:,} and {samples_to:,} training "
                               f"samples: non-finite {', '.join(bad)}. Try a smaller learning rate.")
