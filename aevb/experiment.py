"""One run end to end: a RunConfig that checks itself, and train_run(), which loads the data, trains
(choosing Kingma's step size first where the protocol says so), estimates log p(x) where asked, and
writes the run folder. notebooks/train.ipynb is a thin page around these two.
"""
import dataclasses
import math
from pathlib import Path

import torch

import vae_core as vc
from aevb import data, estimators
from aevb.runs import code_hash, load_run, prepare_run, run_lock, save_run


@dataclasses.dataclass
class RunConfig:
    """Every parameter of a run; the training notebook's parameters cell documents each one."""
    dataset: str
    binarize: str
    algorithm: str
    latent_dim: int
    hidden: list
    activation: str
    init: str
    init_std: float
    samples: int
    batch_size: int
    n_samples: int
    optimizer: str
    lr: float
    lr_schedule: str
    adam_eps: float
    lr_choices: list
    lr_trial_samples: int
    weight_prior: bool
    warmup_steps: int
    mcem_updates: int
    train_size: int
    test_size: int
    eval_points: int
    log_px_points: int
    log_px_k: int
    is_points: int
    is_k: int
    refit_samples: int
    appd_points: int
    checkpoint_every: int
    protocol: str
    seed: int
    device: str

    @classmethod
    def from_namespace(cls, namespace):
        """The config made of the names a notebook defines (its parameters cell), the others ignored."""
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls)})

    def __post_init__(self):
        """Refuse a bad value before any work, naming the parameter, its value and what is allowed."""
        choice("dataset", self.dataset, ["mnist", "frey"])
        choice("binarize", self.binarize, ["none"] if self.dataset == "frey" else ["none", "dynamic", "static"])
        choice("algorithm", self.algorithm, vc.ALGORITHMS)
        choice("activation", self.activation, sorted(vc.ACTIVATIONS))
        choice("init", self.init, ["normal", "glorot"])
        choice("lr_schedule", self.lr_schedule, list(vc.LR_SCHEDULES))
        choice("optimizer", self.optimizer, ["adam", "adagrad"])
        choice("weight_prior", self.weight_prior, [False, True])
        for name in ("latent_dim", "samples", "batch_size", "n_samples", "eval_points", "checkpoint_every", "seed",
                     "lr_trial_samples", "is_k", "mcem_updates"):
            positive(name, getattr(self, name))
        for name in ("train_size", "test_size", "log_px_points", "log_px_k", "is_points", "warmup_steps",
                     "refit_samples", "appd_points"):
            positive(name, getattr(self, name), allow_zero=True)
        positive("lr", self.lr, integer=False)
        positive("init_std", self.init_std, integer=False)
        positive("adam_eps", self.adam_eps, integer=False)
        if not isinstance(self.lr_choices, (list, tuple)):
            raise ValueError(f"parameter lr_choices={self.lr_choices!r} is not allowed; expected a list, "
                             "e.g. [0.01, 0.02, 0.1]")
        for value in self.lr_choices:
            positive("lr_choices", value, integer=False)
        if self.mcem_updates != 1 and self.algorithm != "mcem":
            raise ValueError(f"parameter mcem_updates={self.mcem_updates!r} is not allowed for {self.algorithm}: "
                             "it is MCEM's (decoder updates per HMC sample)")
        if self.appd_points and self.log_px_points:
            raise ValueError("parameters appd_points and log_px_points are not allowed together: both log "
                             "test_log_px_appd (after training, and at each evaluation)")
        if self.refit_samples and not self.is_points:
            raise ValueError(f"parameter refit_samples={self.refit_samples!r} needs is_points > 0: the refitted "
                             "encoder's estimate is of the first is_points test points")
        if self.lr_choices and self.algorithm == "mcem":
            raise ValueError("parameter lr_choices is not allowed for mcem: the choice scores the training lower "
                             "bound, which MCEM (no encoder) does not have")
        if not (isinstance(self.hidden, (list, tuple)) and self.hidden
                and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden)):
            raise ValueError(f"parameter hidden={self.hidden!r} is not allowed; expected a list of positive "
                             "integers, e.g. [500]")
        vc.select_device(self.device)  # refuses a device this machine does not have


def choice(name, value, allowed):
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        raise ValueError(f"parameter {name}={value!r} is not allowed; expected one of {list(allowed)}")


def positive(name, value, allow_zero=False, integer=True):
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "an integer" if integer else "a number"
        raise ValueError(f"parameter {name}={value!r} is not allowed; expected {what} "
                         f"{'>= 0' if allow_zero else '> 0'}")


def load_data(config):
    """(train_x, test_x, likelihood) of the run: the first train_size / test_size points (0: all)."""
    train_x, _ = data.load(config.dataset, "train", config.binarize)
    test_x, _ = data.load(config.dataset, "test", config.binarize)
    likelihood = "bernoulli" if config.dataset == "mnist" else "gaussian"
    return train_x[:config.train_size or None], test_x[:config.test_size or None], likelihood


def saved_config(config, train_x, test_x, likelihood):
    """What the run folder's config.json records: the values that decide what the run computes."""
    c = config
    saved = dict(dataset=c.dataset, binarize=c.binarize, algorithm=c.algorithm, latent_dim=c.latent_dim,
                 hidden=list(c.hidden), activation=c.activation, likelihood=likelihood, init_std=c.init_std,
                 samples=c.samples, batch_size=c.batch_size, n_samples=c.n_samples, optimizer=c.optimizer,
                 lr=c.lr, weight_prior=c.weight_prior, train_size=len(train_x), test_size=len(test_x),
                 eval_points=c.eval_points, protocol=c.protocol, seed=c.seed, code_hash=code_hash())
    # Options below enter the config only when used, so that a run that does not use one keeps its config.
    if c.log_px_points:
        saved.update(log_px_points=c.log_px_points, log_px_k=c.log_px_k)
    if c.lr_choices:  # the step size is then a result of the run, recorded in its metrics
        saved.update(lr=None, lr_choices=[float(v) for v in c.lr_choices], lr_trial_samples=c.lr_trial_samples)
    if c.is_points:
        saved.update(is_points=min(c.is_points, len(test_x)), is_k=c.is_k)
    if c.warmup_steps:
        saved.update(warmup_steps=c.warmup_steps)
    if c.mcem_updates != 1:
        saved.update(mcem_updates=c.mcem_updates)
    if c.init != "normal":
        saved.update(init=c.init, init_std=None)
    if c.lr_schedule != "constant":
        saved.update(lr_schedule=c.lr_schedule)
    if c.optimizer == "adam" and c.adam_eps != 1e-8:
        saved.update(adam_eps=c.adam_eps)
    if c.refit_samples:
        saved.update(refit_samples=c.refit_samples)
    if c.appd_points:
        saved.update(appd_points=min(c.appd_points, len(test_x)))
    return saved


def log_px_estimator(algorithm):
    """Importance sampling with q(z|x) as proposal, or for MCEM, which has no encoder, with a proposal
    fitted to HMC samples of the posterior."""
    return estimators.log_likelihood_hmc if algorithm == "mcem" else estimators.log_likelihood


def with_se(values):
    """(mean, standard error of the mean) of a tensor of per-point estimates."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else 0.0


def train_run(config, run_dir, replace_stale=False, progress="lines", threads=0):
    """Train the run `config` describes into run_dir, or reuse the finished one there; return it (load_run).

    replace_stale: retrain a finished run with another config (what make passes: it knows the
    parameters or the code changed). threads: PyTorch's CPU threads (0: its default).
    """
    choice("replace_stale", replace_stale, [False, True])
    choice("progress", progress, ["bar", "lines", "none"])
    positive("threads", threads, allow_zero=True)
    if threads:
        torch.set_num_threads(threads)
    print(f"device {vc.select_device(config.device)}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    train_x, test_x, likelihood = load_data(config)
    print(f"{config.dataset}: {len(train_x)} training and {len(test_x)} test points of dimension {train_x.shape[1]}")
    saved = saved_config(config, train_x, test_x, likelihood)
    estimate = log_px_estimator(config.algorithm)
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        finished, checkpoint = prepare_run(run_dir, saved, replace_stale)
        if finished:
            print(f"reusing the finished run in {run_dir}")
            return load_run(run_dir)
        c = config
        torch.manual_seed(c.seed)
        model = vc.VAE(train_x.shape[1], c.latent_dim, c.hidden, c.activation, likelihood, c.init_std, c.init)
        common = dict(batch_size=c.batch_size, n_samples=c.n_samples, optimizer=c.optimizer,
                      weight_prior=c.weight_prior, warmup_steps=c.warmup_steps, seed=c.seed, device=c.device,
                      dynamic_binarization=c.binarize == "dynamic", lr_schedule=c.lr_schedule, adam_eps=c.adam_eps)
        lr, extra_metrics = c.lr, {}
        if c.lr_choices:  # Kingma's rule; each candidate trains a copy from this same initialization
            lr, scores = vc.choose_lr(model, train_x, c.algorithm, c.lr_choices, c.lr_trial_samples, **common)
            print(f"step size {lr} chosen; training lower bound after {c.lr_trial_samples:,} samples: "
                  + ", ".join(f"lr {k}: {v:.2f}" for k, v in scores.items()))
            extra_metrics["lr_trial_train_elbo"] = {str(k): v for k, v in scores.items()}
        extra_metrics["lr"] = lr

        eval_at = vc.log_spaced_points(c.samples, c.eval_points)
        last_epoch = c.samples - len(train_x) // c.batch_size * c.batch_size
        if last_epoch > 0 and not c.log_px_points:  # the final row's running bound is then over the last epoch,
            # as the report's training loss (not with log_px_points: each evaluation would also estimate log p(x))
            eval_at = sorted(set(eval_at) | {last_epoch})

        def log_px_of_first_points(model):  # Kingma's Figure 3: log p(x) of the first points at each evaluation,
            # by App. D's estimator (the paper's, for all three algorithms) and by importance sampling beside it
            out = {}
            for split, x in (("train", train_x), ("test", test_x)):
                out[f"{split}_log_px_appd"] = estimators.log_likelihood_appendix_d(model, x[:c.log_px_points]).mean()
                out[f"{split}_log_px_is"] = estimate(model, x[:c.log_px_points], k=c.log_px_k).mean()
            return out

        history = vc.train(model, train_x, c.algorithm, samples=c.samples, lr=lr, eval_at=eval_at, test_x=test_x,
                           mcem_updates=c.mcem_updates,
                           checkpoint_path=checkpoint, checkpoint_every=c.checkpoint_every, progress=progress,
                           eval_fn=log_px_of_first_points if c.log_px_points else None, **common)
        model.eval()  # the test log-likelihood, once, on the final model
        if c.is_points:
            mean, se = with_se(estimate(model, test_x[:c.is_points], k=c.is_k))
            extra_metrics.update(test_log_px_is=mean, test_log_px_is_se=se)
            print(f"test log p(x), importance sampling with k = {c.is_k} on {c.is_points} points: {mean:.2f} ± {se:.2f}")
        if c.refit_samples:  # the same estimate with an encoder fitted afresh to the frozen decoder
            log_px, refit_elbo = estimators.log_likelihood_refit(
                model, train_x, test_x[:c.is_points], c.refit_samples, k=c.is_k, seed=c.seed,
                dynamic_binarization=c.binarize == "dynamic")
            mean, se = with_se(log_px)
            extra_metrics.update(test_log_px_refit=mean, test_log_px_refit_se=se, refit_train_elbo=refit_elbo)
            print(f"... with an encoder refitted for {c.refit_samples:,} samples: {mean:.2f} ± {se:.2f} "
                  f"(its training ELBO {refit_elbo:.2f})")
        if c.appd_points:
            mean, se = with_se(estimators.log_likelihood_appendix_d(model, test_x[:c.appd_points], seed=c.seed))
            extra_metrics.update(test_log_px_appd=mean, test_log_px_appd_se=se)
            print(f"test log p(x), Appendix D's estimator on {c.appd_points} points: {mean:.2f} ± {se:.2f}")
        save_run(run_dir, saved, history, model, extra_metrics)
        checkpoint.unlink(missing_ok=True)
    return load_run(run_dir)
