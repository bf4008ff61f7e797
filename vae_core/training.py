"""The training loop, `train`, and what it hands work to: the check of its arguments, the device,
the optimizer and its step-size schedule, the evaluation sets and rows. Checkpoints are the
caller's object (`checkpoint`: its save, resume and when one is due; aevb.runs.Checkpoint)."""
import math
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

from vae_core.algorithms import ALGORITHMS
from vae_core.model import bernoulli

LR_SCHEDULES = ("constant", "burda")
MINIBATCHES = ("epochs", "with_replacement")
OPTIMIZERS = ("adam", "adagrad")
_DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


class TrainingDiverged(RuntimeError):
    pass


def select_device(name="auto"):
    """Pick the device once: 'auto' is cuda, then mps, then cpu; a named one is honoured or
    refused clearly."""
    name = str(name)
    has_mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r}: expected {_DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={name!r} but CUDA is not available on this machine; "
                               "use device='auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={name!r} but only {torch.cuda.device_count()} CUDA "
                               "device(s) exist")
    elif device.type == "mps" and not has_mps:
        raise RuntimeError(f"device={name!r} but MPS is not available on this machine; "
                           "use 'auto' or 'cpu'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r}: expected {_DEVICES}")
    return device


def check_arguments(algorithm, options, n_train, samples, epochs, batch_size, lr, warmup_steps,
                    lr_schedule, minibatches):
    """train's arguments checked before any work: the number of training samples it makes, or a
    clear error."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}: expected one of {list(ALGORITHMS)}")
    ALGORITHMS[algorithm].check(options)
    if (samples is None) == (epochs is None):
        raise ValueError("give exactly one of samples= or epochs=")
    total = int(samples) if samples is not None else int(epochs * n_train)
    if (not 1 <= batch_size <= min(n_train, total) or lr <= 0 or warmup_steps < 0
            or lr_schedule not in LR_SCHEDULES or minibatches not in MINIBATCHES):
        raise ValueError(f"need 1 <= batch_size <= samples and {n_train} points, lr > 0, "
                         f"warmup_steps >= 0, lr_schedule in {LR_SCHEDULES}, minibatches in "
                         f"{MINIBATCHES}; got {batch_size}, {total}, {lr}, {warmup_steps}, "
                         f"{lr_schedule!r}, {minibatches!r}")
    return total


def make_optimizer(named_params, name, lr, weight_decay, device, adam_eps=1e-8):
    """weight_decay on the weight matrices alone, as anglepy's prior (models/VAE_Z_X.py: `f_prior`
    of the w's). name: "adam", "adagrad", or a function (param groups, lr) -> an optimizer
    (aevb.released.IwaeAdam's, say)."""
    named_params = list(named_params)
    params = [{"params": [p for n, p in named_params if n.endswith("weight") == decay],
               "weight_decay": weight_decay * decay} for decay in (True, False)]
    if name == "adam":  # fused: one kernel for all parameters (CPU, CUDA and MPS)
        return torch.optim.Adam(params, lr=lr, eps=adam_eps, fused=True)
    if name == "adagrad":  # Kingma & Welling's optimizer; its fused kernel is CPU-only
        return torch.optim.Adagrad(params, lr=lr, fused=device.type == "cpu" or None)
    if callable(name):
        return name(params, lr)
    raise ValueError(f"optimizer={name!r}: expected 'adam', 'adagrad' or a function "
                     "(params, lr) -> optimizer")


def burda_stage(epoch):
    """Burda et al.'s schedule (Sec. 5.1): stage i = 0..7 lasts 3^i passes over the data at learning
    rate 0.001 * 10^(-i/7), 3280 passes in all; the stage of pass `epoch` (0-based), 7 after the
    end."""
    stage, end = 0, 1
    while epoch >= end and stage < 7:
        stage += 1
        end += 3 ** stage
    return stage


def step_size_schedule(opt, warmup_steps, lr_schedule, steps_per_epoch):
    """The optimizer's learning-rate factor per minibatch (None: always 1): 0 in the warm-up, whose
    steps only feed the optimizer's statistics, then Burda's stages or 1."""
    if not warmup_steps and lr_schedule == "constant":
        return None

    def lr_factor(i):  # minibatch i's
        decay = 10 ** (-burda_stage(i // steps_per_epoch) / 7) if lr_schedule == "burda" else 1.0
        return float(i >= warmup_steps) * decay
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def evaluation_sets(train_x, test_x, eval_size, dynamic_binarization, seed, device):
    """The sets whose bound each history row holds: the first eval_size training points (under
    dynamic binarization, a fixed draw of them, like the binarized test set) and test_x."""
    sets = {"train": train_x[:eval_size], "test": None if test_x is None else test_x.to(device)}
    if dynamic_binarization:
        generator = torch.Generator(device).manual_seed(seed)
        sets["train"] = torch.bernoulli(sets["train"], generator=generator)
    return sets


def train(model, train_x, algorithm="aevb", *, samples=None, epochs=None, batch_size=100,
          optimizer="adam", lr=1e-3, adam_eps=1e-8, weight_prior=False, warmup_steps=0,
          lr_schedule="constant", minibatches="epochs", dynamic_binarization=False, seed=0,
          device="auto", test_x=None, eval_at=None, eval_size=10_000, eval_fn=None,
          checkpoint=None, log=None, **options):
    """Train `model` on `train_x` [N, D] with one of ALGORITHMS and its `options` (n_samples: the
    SGVB estimator's L, IWAE's k; MCEM's hmc_transitions, updates, step_size_rule); return the
    history, a list of rows. Budget: `samples` (Kingma's x-axis) or `epochs`. weight_prior:
    p(theta) = N(0, I), a weight decay 1/N of the weight matrices on the per-datapoint objective
    (Kingma & Welling, Sec. 5). warmup_steps: minibatches that only feed the optimizer's statistics
    (Kingma's Adagrad: 101). minibatches: "epochs" (shuffled each pass), or "with_replacement"
    (anglepy's wzoptim.py). eval_at: the sample counts of the rows (the last is one): running
    values, the bound on the first `eval_size` training points and on test_x (an algorithm with an
    encoder), and eval_fn(model, state)'s dict (state: the algorithm's, e.g. MCEM's chains), on
    its own RNG stream. checkpoint: `due`, `save`, `resume` (aevb.runs.Checkpoint). log(row,
    total): per row."""
    n_train = len(train_x)
    total = check_arguments(algorithm, options, n_train, samples, epochs, batch_size, lr,
                            warmup_steps, lr_schedule, minibatches)

    # ---- set up: device, seed, data, the algorithm's step, its optimizer and step-size schedule
    device = select_device(device)
    torch.set_flush_denormal(True)  # again, for the thread train runs in (vae_core/__init__.py)
    torch.manual_seed(seed)
    model.to(device)
    train_x = train_x.to(device)
    eval_sets = evaluation_sets(train_x, test_x, eval_size, dynamic_binarization, seed, device)
    step = ALGORITHMS[algorithm](model, n_train, **options)
    # the weight prior is on the weights the step learns (MCEM: theta's alone)
    opt = make_optimizer(step.named_parameters(), optimizer, lr, weight_prior / n_train, device,
                         adam_eps)
    steps_per_epoch = n_train // batch_size  # drop the last partial batch: every step sees M points
    schedule = step_size_schedule(opt, warmup_steps, lr_schedule, steps_per_epoch)

    # ---- resume from the checkpoint, where one was saved
    parts = {"model": model, "optimizer": opt, "schedule": schedule, "step": step}  # state_dicts
    # where the run stands
    run = {"history": [], "samples_seen": 0, "sums": {}, "sums_from": 0, "wall_time": 0.0}
    if checkpoint is not None:
        run = checkpoint.resume(parts, run, device)
    history, samples_seen = run["history"], run["samples_seen"]
    start = time.perf_counter() - run["wall_time"]  # so that perf_counter() - start is wall time
    points = sorted({int(p) for p in eval_at or () if samples_seen < p < total} | {total})
    # the running sums since the last row
    sums = defaultdict(lambda: torch.zeros((), device=device, dtype=torch.float64), run["sums"])

    while samples_seen < total:
        if minibatches == "epochs":  # a fresh shuffle each epoch
            order = torch.randperm(n_train, device=device)
        else:  # with replacement
            order = torch.randint(n_train, (steps_per_epoch * batch_size,), device=device)
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
                row = history_row(step, sums, run["sums_from"], samples_seen, n_train, eval_sets,
                                  eval_fn, seed, device)
                history.append({**row, "wall_time": time.perf_counter() - start})
                if log is not None:
                    log(history[-1], total)
                sums.clear()
                run["sums_from"] = samples_seen
                points = [p for p in points if p > samples_seen]
            if samples_seen >= total:
                break

        # ---- checkpoint at an epoch's end, when one is due; never a diverged model
        if (checkpoint is not None and samples_seen < total
                and checkpoint.due(samples_seen, n_train)):
            check_finite(model, sums, run["sums_from"], samples_seen)
            run.update(samples_seen=samples_seen, sums=dict(sums),
                       wall_time=time.perf_counter() - start)
            checkpoint.save(parts, run, device)
    return history


# ==== Evaluation ==================================================================================
@contextmanager
def seeded_rng(device, seed):
    """Run a block on its own seeded RNG stream, then restore the caller's (CPU and `device`)."""
    devices = [] if device.type == "cpu" else [device.index or 0]
    with torch.random.fork_rng(devices=devices, device_type=device.type):
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


def history_row(step, sums, sums_from, samples_seen, n_train, eval_sets, eval_fn, seed, device):
    """A history row: the step's running values since sums_from, then in eval mode each set's
    bound and eval_fn's."""
    row, model = {"samples": samples_seen, "epoch": samples_seen / n_train}, step.model.eval()
    row.update(step.log(sums, samples_seen - sums_from))
    for prefix, data in eval_sets.items():
        if step.has_bound and data is not None:
            bound = evaluate(model, data, seed=seed)
            row.update({f"{prefix}_{key}": value for key, value in bound.items()})
    if eval_fn is not None:
        with seeded_rng(device, seed):  # whatever eval_fn draws, training's stream is untouched
            state = eval_fn(model, step.state_dict())
            row.update({key: float(value) for key, value in state.items()})
    model.train()
    return row


def check_finite(model, sums, samples_from, samples_to):
    """Raise with when and what if a training term or a parameter stopped being finite."""
    bad = [name for name, v in sums.items() if not math.isfinite(v.item())]
    bad += [f"parameter {n}" for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"training diverged between {samples_from:,} and {samples_to:,} "
                               f"training samples: non-finite {', '.join(bad)}. Try a smaller "
                               "learning rate.")
