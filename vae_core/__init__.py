"""Auto-Encoding Variational Bayes (Kingma & Welling, 2013) and the algorithms it is judged against,
wake-sleep (Hinton et al., 1995), Monte Carlo EM with HMC (Kingma & Welling, App. E) and the IWAE
(Burda et al., 2015), with no files (data, log p(x) estimators, run folders and checkpoints are
`aevb`'s). Every per-datapoint quantity is in nats: `elbo`, `recon` (E_q log p(x|z)) and `log_px`
are log-likelihoods, `kl` >= 0 is KL(q || p). In three parts, each read on its own:

- `vae_core.model`: the model, its objectives (ELBO, IWAE bound, wake-sleep's losses) and HMC;
- `vae_core.algorithms`: a step class per algorithm, `ALGORITHMS`;
- `vae_core.training`: the training loop `train`, its optimizer, schedule and evaluation rows.

`import vae_core as vc` gives every public name of the three.
"""
import torch

# Flush denormal floats (the optimizers' squared gradients make them; x86 is ~50x slower on them)
# to zero. The mode is per thread and OpenMP's threads keep the one they start with: set it before
# they start.
torch.set_flush_denormal(True)

from vae_core import algorithms, model, training  # noqa: E402
from vae_core.algorithms import *  # noqa: E402, F403 (each algorithm's class, ALGORITHMS)
from vae_core.model import (  # noqa: E402
    ACTIVATIONS, HMC_GLOBAL_INIT_STEP_SIZE, HMC_INIT_STEP_SIZE, INITS, LIKELIHOODS, LOG_2PI,
    RECOGNITION, VAE, bernoulli, global_step_size, hmc, iwae_bound, kl_to_standard_normal,
    log_normal, log_standard_normal, mlp, normal_sample, wake_sleep_losses)
from vae_core.training import (  # noqa: E402
    LR_SCHEDULES, MINIBATCHES, OPTIMIZERS, TrainingDiverged, burda_stage, check_arguments,
    check_finite, evaluate, evaluation_sets, history_row, make_optimizer, seeded_rng,
    select_device, step_size_schedule, train)

__all__ = [
    "algorithms", "model", "training",
    *algorithms.__all__,
    "ACTIVATIONS", "HMC_GLOBAL_INIT_STEP_SIZE", "HMC_INIT_STEP_SIZE", "INITS", "LIKELIHOODS",
    "LOG_2PI", "RECOGNITION", "VAE", "bernoulli", "global_step_size", "hmc", "iwae_bound",
    "kl_to_standard_normal", "log_normal", "log_standard_normal", "mlp", "normal_sample",
    "wake_sleep_losses",
    "LR_SCHEDULES", "MINIBATCHES", "OPTIMIZERS", "TrainingDiverged", "burda_stage",
    "check_arguments", "check_finite", "evaluate", "evaluation_sets", "history_row",
    "make_optimizer", "seeded_rng", "select_device", "step_size_schedule", "train",
]
