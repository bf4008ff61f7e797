"""Burda et al.'s released code (yburda/iwae) where a protocol follows it or measures it, each as
its source has it: their Adam (`IwaeAdam`, handed to vae_core.train as its optimizer) and their
decoder's output bias. anglepy's choices that a training step needs (one HMC step size for all
chains, the wake-sleep recognition model, minibatches with replacement) are in vae_core itself.
"""
import math

import torch

ADAM_IWAE = "adam_iwae"  # the run parameter `optimizer` that trains with IwaeAdam


class IwaeAdam(torch.optim.Optimizer):
    """Burda et al.'s Adam as their code runs it (yburda/iwae, optimizers.py:
    `Adam.updatesIgrad_model`): beta1 0.99, beta2 0.999, second moments from ones, the step at
    timestep t (from 1) lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + 1e-4), and Theano's
    simultaneous updates: step t moves the parameters by the moments *before* they take step t's
    gradient, so the first step is zero and each gradient acts one step later. Their gradient is of
    the minibatch's summed bound; ours of its mean: grad_scale (the minibatch size) turns the one
    into the other (v, from ones, is not scale-free). Descends the loss (they ascend the bound)."""

    def __init__(self, params, lr=1e-3, betas=(0.99, 0.999), eps=1e-4, grad_scale=1.0,
                 weight_decay=0.0):
        super().__init__(
            params,
            dict(lr=lr, betas=betas, eps=eps, grad_scale=grad_scale, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            (beta1, beta2), eps = group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.ones_like(p))
                state["step"] += 1
                t = state["step"]
                # at the step's parameters
                grad = group["grad_scale"] * (p.grad + group["weight_decay"] * p)
                alpha = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                # by the moments of steps 1..t-1
                p.sub_(alpha * state["m"] / (state["v"].sqrt() + eps))
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


@torch.no_grad()
def init_output_bias(model, train_x):
    """The decoder's output bias at the logit of the training set's mean pixel, clipped to [0.001,
    0.999], as Burda et al.'s code starts it (yburda/iwae, datasets.py: `get_train_bias_np`;
    iwae.py: `random_iwae`)."""
    if model.likelihood != "bernoulli":
        raise ValueError(
            "init_output_bias is for a Bernoulli decoder (its output is the pixels' logits)")
    mean = train_x.double().mean(0).clamp(0.001, 0.999)
    model.decoder[-1].bias.copy_(torch.log(mean / (1 - mean)))


# ---- anglepy: each algorithm's model as the released code of the paper's time trains it ---------
# The first commit of dpkingma/anglepy that holds both algorithms (55f25be, 2014-04-28; nothing
# older holds `step_wakesleep`): wzoptim.py's `step_va` trains models/MLEM.py's DLVM, whose
# `init_w` starts the log-variance layer and the output biases at zero ("anglepy-va");
# `step_wakesleep` trains models/MLBN_Inverse.py as its recognition model, log-variance
# 0.1 * W h + b from zero, tanh ("anglepy"). A protocol's recognition="released" is the
# algorithm's own.
RECOGNITION = {"aevb": "anglepy-va", "wake_sleep": "anglepy"}


def recognition(value, algorithm):
    """vae_core's recognition setting for a protocol's `value`: 'released' is the algorithm's in
    anglepy (RECOGNITION), any other value itself."""
    return RECOGNITION[algorithm] if value == "released" else value
