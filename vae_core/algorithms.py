"""The algorithms, one step class each: built as cls(model, n_train, **options), a call makes one
update on a minibatch and returns its running sums; `ALGORITHMS` names them for `train`. A new
algorithm is a class here and its line in `ALGORITHMS`; its label, colour and cost go in
aevb/declared.py, its runs in aevb/grid.py."""
import math

import torch

from vae_core.model import (HMC_GLOBAL_INIT_STEP_SIZE, HMC_INIT_STEP_SIZE, hmc, iwae_bound,
                            log_standard_normal, wake_sleep_losses)


class Algorithm:
    """What the algorithms share: their `options` (names and defaults, integers >= 1), the
    parameters they learn, whether a lower bound is worth evaluating (an encoder) and what a
    checkpoint keeps."""
    name = None
    options = {}  # option name -> default
    choices = {}  # the allowed values of an option whose default is a string
    has_bound = True
    saved = ()  # the attributes a checkpoint keeps
    learns = None  # a part of the model ("encoder", "decoder"), or None: all of it

    def __init__(self, model, n_train, **options):
        self.__dict__.update(self.check(options), model=model)

    @classmethod
    def check(cls, options):
        """The options with the defaults filled in, or a clear error."""
        for key, value in options.items():
            if key not in cls.options:
                raise ValueError(f"{cls.name} takes the options {', '.join(cls.options)}; "
                                 f"not {key}")
            if key in cls.choices:
                kind, allowed = f"one of {list(cls.choices[key])}", value in cls.choices[key]
            else:
                kind = "an integer >= 1"
                allowed = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if not allowed:
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
    name = "aevb"
    options = {"n_samples": 1}

    def __call__(self, opt, xb, idx):
        elbo, log_px_given_z, kl = self.model.elbo(xb, self.n_samples)
        self.update(opt, -elbo.mean())
        return {"log p(x|z)": log_px_given_z.detach().sum(), "KL": kl.detach().sum()}

    def log(self, sums, n):  # the row's running values: the sums over the last n points, per point
        return {"running_elbo": (sums["log p(x|z)"] - sums["KL"]).item() / n}


class WakeSleep(AEVB):
    """Wake-sleep, Kingma & Welling's baseline (`wake_sleep_losses`): the two losses share no
    parameters, so one backward pass and one step make the wake update of theta and the sleep
    update of phi."""
    name = "wake_sleep"

    def __call__(self, opt, xb, idx):
        losses = wake_sleep_losses(self.model, xb, self.n_samples)
        wake_loss, sleep_loss, log_px_given_z, kl = losses
        self.update(opt, wake_loss + sleep_loss)
        return {"log p(x|z)": log_px_given_z.sum(), "KL": kl.sum()}


class IWAE(AEVB):
    """The importance weighted autoencoder (Burda et al., 2015): ascend `iwae_bound` with
    k = n_samples."""
    name = "iwae"

    def __call__(self, opt, xb, idx):
        bound = iwae_bound(self.model, xb, self.n_samples)
        self.update(opt, -bound.mean())
        return {"k-sample bound": bound.detach().sum()}

    def log(self, sums, n):
        return {"running_iwae_bound": sums["k-sample bound"].item() / n}


class MCEM(Algorithm):
    """Monte Carlo EM (Kingma & Welling, App. E; their Figure 3 baseline), of the decoder only.
    E-step: `hmc_transitions` HMC transitions (10 leapfrog steps, step size adapted to ~90%
    acceptance) of the minibatch's persistent chains on p(z|x); M-step: `updates` gradient steps on
    theta at the chain states (App. E: "5 weight updates steps using the acquired sample"). A
    minibatch of the whole training set is their batch MCEM (anglepy, wzoptim.py:
    `step_batch_mcem`), whose one step size for all chains is step_size_rule="global" (hmc.py:
    `hmc_step_autotune`, from 1e-2). No bound: judge it by train's eval_fn."""
    name = "mcem"
    options = {"hmc_transitions": 1, "updates": 1, "step_size_rule": "per_chain"}
    choices = {"step_size_rule": ("per_chain", "global")}
    has_bound = False
    saved = ("chains",)
    learns = "decoder"

    def __init__(self, model, n_train, **options):
        super().__init__(model, n_train, **options)
        device = next(model.parameters()).device  # one chain per training point, from the prior
        per_chain = self.step_size_rule == "per_chain"
        init_step_size = HMC_INIT_STEP_SIZE if per_chain else HMC_GLOBAL_INIT_STEP_SIZE
        self.chains = {"z": torch.randn(n_train, model.z_dim, device=device),
                       "step_size": torch.full((n_train,), init_step_size, device=device),
                       # at its latest visit
                       "accept_prob": torch.full((n_train,), math.nan, device=device)}

    def log_joint(self, xb):
        """z -> log p(x|z) + log p(z) of the minibatch xb: the chains' unnormalized log target."""
        model = self.model
        return lambda z: model.log_px_given_z(xb, model.decode(z)) + log_standard_normal(z)

    def __call__(self, opt, xb, idx):
        adapt = True if self.step_size_rule == "per_chain" else "global"
        z, accept, step_size = hmc(self.log_joint(xb), self.chains["z"][idx],
                                   self.chains["step_size"][idx],
                                   n_transitions=self.hmc_transitions, adapt=adapt)
        self.chains["z"][idx] = z
        self.chains["accept_prob"][idx] = accept
        if adapt is True:  # each chain's own step size
            self.chains["step_size"][idx] = step_size
        else:  # one for all the chains
            self.chains["step_size"][:] = step_size[0]
        for i in range(self.updates):
            log_px_given_z = self.model.log_px_given_z(xb, self.model.decode(z))
            if i == 0:  # what the log shows: the terms at the new sample, before the M-step
                sums = {"log p(x|z)": log_px_given_z.detach().sum(),
                        "-log p(z)": -log_standard_normal(z).sum()}
            self.update(opt, -log_px_given_z.mean())
        return sums

    def log(self, sums, n):
        return {"running_log_joint": (sums["log p(x|z)"] - sums["-log p(z)"]).item() / n,
                "hmc_accept_prob": self.chains["accept_prob"].nanmean().item(),  # chains visited
                "hmc_step_size": self.chains["step_size"].mean().item()}


ALGORITHMS = {cls.name: cls for cls in (AEVB, WakeSleep, MCEM, IWAE)}
# what `import vae_core as vc` gives of this part: the base class, the table, each algorithm
__all__ = ["Algorithm", "ALGORITHMS", *(cls.__name__ for cls in ALGORITHMS.values())]
