"""One run end to end: RunConfig, every parameter of a run with its default as the training
notebook's parameters cell declares it (aevb.declared), which checks itself; and train_run(), which
loads the data, trains (choosing Kingma's step size first where the protocol says so), estimates
log p(x) where asked, and writes the run folder. notebooks/train.ipynb is a thin page around these
two.
"""
import copy
import dataclasses
import math
from dataclasses import field

import numpy as np
import torch

import vae_core as vc
from vae_core import select_device  # the device's one owner: vae_core.training
from aevb import data, declared, estimators, paths, released
from aevb.runs import Checkpoint, code_hash, load_run, prepare_run, run_lock, save_run


class RunChecks:
    """What RunConfig does beyond holding the values: it is made from a namespace (a notebook's
    globals) and refuses a bad value before any work."""

    @classmethod
    def from_namespace(cls, namespace):
        """The config made of the names a notebook defines (its parameters cell), the others
        ignored."""
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls)})

    def __post_init__(self):
        """Refuse a bad value before any work, naming the parameter, its value and what is
        allowed."""
        choice("dataset", self.dataset, list(declared.DATASETS))
        its = declared.dataset(self.dataset)
        choice("binarize", self.binarize, list(its.binarize))
        choice("pixel_scale", self.pixel_scale,
               [255] if self.binarize == "static" else list(data.PIXEL_SCALES))
        choice("algorithm", self.algorithm, list(vc.ALGORITHMS))
        choice("activation", self.activation, sorted(vc.ACTIVATIONS))
        choice("init", self.init, list(vc.INITS))
        choice("lr_schedule", self.lr_schedule, list(vc.LR_SCHEDULES))
        choice("optimizer", self.optimizer, [*vc.OPTIMIZERS, released.ADAM_IWAE])
        choice("recognition", self.recognition,
               [*vc.RECOGNITION, *(["released"] if self.algorithm in released.RECOGNITION else [])])
        # the logit of the training mean: a Bernoulli decoder's (Burda et al.'s code)
        choice("output_bias", self.output_bias,
               ["init", "data_mean"] if its.likelihood == "bernoulli" else ["init"])
        choice("minibatches", self.minibatches,
               ["epochs"] if self.algorithm == "mcem" else list(vc.MINIBATCHES))
        choice("appd_start", self.appd_start, ["encoder", "prior"])
        choice("mcem_step_size_rule", self.mcem_step_size_rule,
               list(vc.MCEM.choices["step_size_rule"]))
        choice("weight_prior", self.weight_prior, [False, True])
        for name in ("latent_dim", "samples", "n_samples", "eval_points", "checkpoint_every",
                     "seed", "lr_trial_samples", "is_k", "mcem_updates"):
            positive(name, getattr(self, name))
        for name in ("batch_size", "train_size", "test_size", "log_px_points", "log_px_k",
                     "is_points", "warmup_steps", "refit_samples", "appd_points",
                     "validation_size"):
            positive(name, getattr(self, name), allow_zero=True)
        positive("lr", self.lr, integer=False)
        positive("init_std", self.init_std, integer=False)
        positive("adam_eps", self.adam_eps, integer=False)
        if not isinstance(self.lr_choices, (list, tuple)):
            raise ValueError(
                f"parameter lr_choices={self.lr_choices!r} is not allowed; expected a list, "
                "e.g. [0.01, 0.02, 0.1]")
        for value in self.lr_choices:
            positive("lr_choices", value, integer=False)
        for name, option in ALGORITHM_OPTIONS.items():  # each algorithm's own: refused for another
            own = vc.ALGORITHMS[self.algorithm].options
            if option in own and own[option] != DEFAULTS[name] == getattr(self, name):
                raise ValueError(  # it would train with the parameter's default
                    f"{self.algorithm}'s own default {option}={own[option]!r} is not the run "
                    f"parameter's default {name}={DEFAULTS[name]!r}: a run of it states {name} "
                    f"(a sweep's params in aevb/grid.py)")
            if option not in own and getattr(self, name) != DEFAULTS[name]:
                owners = [a for a, step in vc.ALGORITHMS.items() if option in step.options]
                raise ValueError(
                    f"parameter {name}={getattr(self, name)!r} is not allowed for "
                    f"{self.algorithm}: "
                    f"it is an option of {', '.join(owners)}")
        if self.optimizer != "adam" and self.adam_eps != DEFAULTS["adam_eps"]:
            raise ValueError(
                f"parameter adam_eps={self.adam_eps!r} is not allowed for {self.optimizer}: it is "
                "Adam's"
            )
        if self.appd_points and self.log_px_points:
            raise ValueError(
                "parameters appd_points and log_px_points are not allowed together: both log "
                "test_log_px_appd (after training, and at each evaluation)")
        if self.refit_samples and not self.is_points:
            raise ValueError(
                f"parameter refit_samples={self.refit_samples!r} needs is_points > 0: the refitted "
                "encoder's estimate is of the first is_points test points")
        if self.lr_choices and self.algorithm == "mcem":
            raise ValueError(
                "parameter lr_choices is not allowed for mcem: the choice scores the training "
                "lower "
                "bound, which MCEM (no encoder) does not have")
        if not (isinstance(self.hidden, (list, tuple)) and self.hidden and all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden)):
            raise ValueError(
                f"parameter hidden={self.hidden!r} is not allowed; expected a list of positive "
                "integers, e.g. [500]")
        select_device(self.device)  # refuses a device this machine does not have

    def options(self):
        """The algorithm's own options (vae_core's ALGORITHMS[algorithm].options), as train takes
        them."""
        takes = vc.ALGORITHMS[self.algorithm].options
        return {
            option: getattr(self, name)
            for name, option in ALGORITHM_OPTIONS.items() if option in takes
        }


def _field(parameter):
    if isinstance(parameter.default, list):  # a fresh list for each config
        return field(default_factory=lambda: copy.deepcopy(parameter.default),
                     metadata={"doc": parameter.doc})
    return field(default=parameter.default, metadata={"doc": parameter.doc})


# Every parameter of a run with its type and default, as notebooks/train.ipynb's parameters cell
# declares it (aevb.declared.parameters; the page's own left out), made into a dataclass here, not
# restated; its checks are RunChecks'. Each field's metadata["doc"] is its line's comment there.
RunConfig = dataclasses.make_dataclass(
    "RunConfig", [(p.name, p.type, _field(p)) for p in declared.parameters() if not p.page],
    bases=(RunChecks,))
RunConfig.__module__ = __name__  # where pickle and help() find it
RunConfig.__doc__ = ("Every parameter of a run, with its default: notebooks/train.ipynb's "
                     "parameters cell says what each one means (each field's metadata['doc']).")

DEFAULTS = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(RunConfig)}
# The parameters that are an algorithm's own options (vae_core: ALGORITHMS[name].options), and the
# option's name
ALGORITHM_OPTIONS = {
    "n_samples": "n_samples", "mcem_updates": "updates", "mcem_step_size_rule": "step_size_rule"
}

# What config.json records, by one rule: a parameter that differs from its default, beside those
# that every config records; a parameter that only qualifies another is recorded with it; the two
# below decide how a run is made, not what it computes. So a new parameter leaves every existing
# config as it was.
ALWAYS_RECORDED = ("dataset", "binarize", "algorithm", "latent_dim", "hidden", "activation",
                   "init_std", "samples", "batch_size", "n_samples", "optimizer", "lr",
                   "weight_prior", "train_size", "test_size", "eval_points", "protocol", "seed")
RECORDED_WITH = {"log_px_k": "log_px_points", "lr_trial_samples": "lr_choices", "is_k": "is_points"}
NOT_RECORDED = ("checkpoint_every", "device")


def choice(name, value, allowed):
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        raise ValueError(
            f"parameter {name}={value!r} is not allowed; expected one of {list(allowed)}")


def positive(name, value, allow_zero=False, integer=True):
    kind = int if integer else (int, float)
    ok = isinstance(
        value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "an integer" if integer else "a number"
        raise ValueError(f"parameter {name}={value!r} is not allowed; expected {what} "
                         f"{'>= 0' if allow_zero else '> 0'}")


def log_spaced_points(total, n=20, first=10_000):
    """About n training-sample counts, log-spaced from `first` to `total` (Kingma's Figure 2
    x-axis)."""
    if n <= 1:
        return [int(total)]
    first = min(first, max(1, total // 10))
    return sorted({int(round(v)) for v in np.geomspace(first, total, n)})


def choose_lr(model, train_x, algorithm, lrs, trial_samples, seed=0, **train_kwargs):
    """Kingma & Welling's choice of the global step size, "from {0.01, 0.02, 0.1} based on
    performance on the training set in the first few iterations": train a copy of `model` (same
    initialization, same minibatches) with each lr in `lrs` for `trial_samples` and score it by its
    training lower bound (on the first `eval_size` training points); a trial that diverges scores
    -inf. Returns (the best lr, {lr: score}). Keywords as in vae_core.train (optimizer,
    weight_prior, ...).
    """
    if algorithm in vc.ALGORITHMS and not vc.ALGORITHMS[algorithm].has_bound:
        raise ValueError(
            "choose_lr scores by the training lower bound, which "
            f"{vc.ALGORITHMS[algorithm].__name__} "
            "(no encoder) does not have")
    if not lrs:
        raise ValueError("choose_lr needs at least one learning rate")
    scores = {}
    for lr in lrs:
        try:
            history = vc.train(copy.deepcopy(model), train_x, algorithm, samples=trial_samples,
                               lr=lr, seed=seed, eval_at=[trial_samples], **train_kwargs)
            score = history[-1]["train_elbo"]
        except vc.TrainingDiverged:
            score = -math.inf
        scores[lr] = score if math.isfinite(score) else -math.inf
    best = max(scores, key=scores.get)  # on a tie, the first listed
    if scores[best] == -math.inf:
        raise vc.TrainingDiverged(
            f"every learning rate in {list(lrs)} diverged within {trial_samples:,} samples")
    return best, scores


class TrainingLog:
    """What a run shows as it trains (vae_core.train's `log`): a line per history row ("lines", for
    headless runs), a tqdm bar ("bar", interactive) or nothing ("none")."""
    SHOWN = ("samples", "epoch", "wall_time", "train_elbo", "train_recon", "train_kl", "test_elbo",
             "test_recon", "test_kl", "hmc_accept_prob", "hmc_step_size")

    def __init__(self, progress, algorithm):
        choice("progress", progress, ["bar", "lines", "none"])
        self.progress, self.algorithm, self.bar = progress, algorithm, None

    def __call__(self, row, total):
        # eval_fn's values
        extra = [k for k in row if k not in self.SHOWN and not k.startswith("running_")]
        if self.progress == "bar":
            if self.bar is None:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, unit="sample", unit_scale=True)
            self.bar.update(row["samples"] - self.bar.n)
            self.bar.set_postfix({k: f"{row[k]:.2f}" for k in ("train_elbo", *extra) if k in row})
        elif self.progress == "lines":
            text = (f"[{self.algorithm}] {row['samples']:>11,}/{total:,} samples  "
                    f"epoch {row['epoch']:6.2f}")
            if "train_elbo" in row:
                text += f"  train ELBO {row['train_elbo']:9.2f}"
            if "test_elbo" in row:
                text += (f"  test ELBO {row['test_elbo']:9.2f} (recon {row['test_recon']:8.2f}, "
                         f"KL {row['test_kl']:6.2f})")
            if "hmc_accept_prob" in row:
                text += (f"  HMC acceptance {row['hmc_accept_prob']:.2f}, "
                         f"step size {row['hmc_step_size']:.3g}")
            print(
                text + "".join(f"  {k} {row[k]:9.2f}"
                               for k in extra) + f"  {row['wall_time']:7.1f}s", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def load_data(config):
    """(train_x, test_x, likelihood) of the run: the first train_size / test_size points (0: all),
    less the last validation_size of those training points, held out and never trained on (Burda et
    al.'s code: yburda/iwae, datasets.py, `binarized_mnist(n_validation=400)` keeps
    `train_data[:-n_validation]`)."""
    train_x, _ = data.load(config.dataset, "train", config.binarize, pixel_scale=config.pixel_scale)
    test_x, _ = data.load(config.dataset, "test", config.binarize, pixel_scale=config.pixel_scale)
    likelihood = declared.dataset(config.dataset).likelihood
    train_x = train_x[:config.train_size or None]
    if not config.validation_size < len(train_x):
        raise ValueError(
            f"parameter validation_size={config.validation_size} is not allowed: it must be below "
            "the "
            f"{len(train_x)} training points")
    return train_x[:len(train_x)
                   - config.validation_size], test_x[:config.test_size or None], likelihood


def saved_config(config, train_x, test_x, likelihood):
    """What the run folder's config.json records: the values that decide what the run computes (the
    rule above), as the run uses them: the data's sizes, the points estimated (at most the test
    set), lr as None where it is chosen (it is then a result, in the metrics), init_std as None for
    Glorot's init."""
    def recorded(name):
        lead = RECORDED_WITH.get(name, name)
        return name in ALWAYS_RECORDED or (name not in NOT_RECORDED
                                           and getattr(config, lead) != DEFAULTS[lead])
    saved = {name: value for name, value in dataclasses.asdict(config).items() if recorded(name)}
    saved.update(hidden=list(config.hidden), likelihood=likelihood, train_size=len(train_x),
                 test_size=len(test_x), batch_size=config.batch_size or len(train_x),
                 code_hash=code_hash())
    for name in ("is_points", "appd_points"):
        if name in saved:
            saved[name] = min(saved[name], len(test_x))
    if config.lr_choices:
        saved.update(lr=None, lr_choices=[float(v) for v in config.lr_choices])
    if config.init != "normal":
        saved["init_std"] = None
    return saved


def log_px_estimator(algorithm):
    """Importance sampling with q(z|x) as proposal, or for MCEM, which has no encoder, with a
    proposal fitted to HMC samples of the posterior."""
    return estimators.log_likelihood_hmc if algorithm == "mcem" else estimators.log_likelihood


def with_se(values):
    """(mean, standard error of the mean) of a tensor of per-point estimates."""
    return values.mean().item(), (values.std()
                                  / math.sqrt(len(values))).item() if len(values) > 1 else 0.0


def train_run(config, run_dir, replace_stale=False, progress="lines", threads=0):
    """Train the run `config` describes into run_dir, or reuse the finished one there; return it
    (load_run).

    replace_stale: retrain a finished run with another config (what make passes: it knows the
    parameters or the code changed). threads: PyTorch's CPU threads (0: its default). A relative
    run_dir is from the repository root, never from the working directory.
    """
    choice("replace_stale", replace_stale, [False, True])
    log = TrainingLog(progress, config.algorithm)
    positive("threads", threads, allow_zero=True)
    if threads:
        torch.set_num_threads(threads)
    print(
        f"device {select_device(config.device)}, {torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}"
    )
    train_x, test_x, likelihood = load_data(config)
    print(
        f"{config.dataset}: {len(train_x)} training and {len(test_x)} test points of dimension "
        f"{train_x.shape[1]}"
    )
    saved = saved_config(config, train_x, test_x, likelihood)
    estimate = log_px_estimator(config.algorithm)
    run_dir = paths.resolve(run_dir, writing=True)
    with run_lock(run_dir):
        finished, checkpoint = prepare_run(run_dir, saved, replace_stale)
        if finished:
            print(f"reusing the finished run in {run_dir}")
            return load_run(run_dir)
        c = config
        torch.manual_seed(c.seed)
        model = vc.VAE(train_x.shape[1], c.latent_dim, c.hidden, c.activation, likelihood,
                       c.init_std, c.init, released.recognition(c.recognition, c.algorithm))
        if c.output_bias == "data_mean":
            released.init_output_bias(model, train_x)
        batch_size = c.batch_size or len(train_x)  # 0: the whole training set (batch MCEM)
        # their Adam on the minibatch's summed gradient
        optimizer = c.optimizer if c.optimizer != released.ADAM_IWAE else (
            lambda params, lr: released.IwaeAdam(params, lr=lr, grad_scale=float(batch_size)))
        common = dict(batch_size=batch_size, optimizer=optimizer, weight_prior=c.weight_prior,
                      minibatches=c.minibatches, warmup_steps=c.warmup_steps, seed=c.seed,
                      device=select_device(c.device), dynamic_binarization=c.binarize == "dynamic",
                      lr_schedule=c.lr_schedule, adam_eps=c.adam_eps, **c.options())
        lr, extra_metrics = c.lr, {}
        # Kingma's rule; each candidate trains a copy from this same initialization
        if c.lr_choices:
            lr, scores = choose_lr(model, train_x, c.algorithm, c.lr_choices, c.lr_trial_samples,
                                   **common)
            print(
                f"step size {lr} chosen; training lower bound after {c.lr_trial_samples:,} "
                "samples: "
                + ", ".join(f"lr {k}: {v:.2f}" for k, v in scores.items()))
            extra_metrics["lr_trial_train_elbo"] = {str(k): v for k, v in scores.items()}
        extra_metrics["lr"] = lr

        eval_at = log_spaced_points(c.samples, c.eval_points)
        last_epoch = c.samples - len(train_x) // batch_size * batch_size
        # the final row's running bound is then over the last epoch, as the report's training loss
        # (not with log_px_points: each evaluation would also estimate log p(x))
        if last_epoch > 0 and not c.log_px_points:
            eval_at = sorted(set(eval_at) | {last_epoch})

        chains = {}  # App. D's chains, kept across calls: where each starts next (None: the prior)

        def log_px_of_first_points(model, state):
            """Kingma's Figure 3: log p(x) of the first points at each evaluation, by App. D's
            estimator (the paper's, for all three algorithms) and by IS beside it, each with its
            standard error over the points (the golden tests' tolerance is made of it).
            appd_start "prior": every chain from the prior at the first evaluation, then from where
            the last ended, for all three algorithms, as anglepy's hmc_est.py `ll_estimator` runs
            them (MLBN.py's `gen_xz` draws z ~ N(0, I), and the chains live on across calls).
            "encoder": from q(z|x), MCEM's training points from its own chains and its test points
            as "prior" (a labelled alternative)."""
            out = {}
            for split, x in (("train", train_x), ("test", test_x)):
                x = x[:c.log_px_points]
                if c.appd_start == "prior" or (c.algorithm == "mcem" and split == "test"):
                    z_init = chains.get(split)
                elif c.algorithm == "mcem":  # where MCEM's own chains are: where the mass is
                    z_init = state["chains"]["z"][:len(x)]
                else:
                    z_init = estimators.encoder_sample(model, x, seed=c.seed)
                log_px, chains[split] = estimators.log_likelihood_appendix_d(
                    model, x, z_init=z_init, seed=c.seed, return_chains=True)
                appd, is_ = f"{split}_log_px_appd", f"{split}_log_px_is"
                out[appd], out[f"{appd}_se"] = with_se(log_px)
                out[is_], out[f"{is_}_se"] = with_se(estimate(model, x, k=c.log_px_k))
            return out

        history = vc.train(model, train_x, c.algorithm, samples=c.samples, lr=lr, eval_at=eval_at,
                           test_x=test_x, checkpoint=Checkpoint(checkpoint, c.checkpoint_every),
                           log=log, eval_fn=log_px_of_first_points if c.log_px_points else None,
                           **common)
        log.close()
        model.eval()  # the test log-likelihood, once, on the final model
        if c.is_points:
            mean, se = with_se(estimate(model, test_x[:c.is_points], k=c.is_k))
            extra_metrics.update(test_log_px_is=mean, test_log_px_is_se=se)
            print(
                f"test log p(x), importance sampling with k = {c.is_k} on {c.is_points} points: "
                f"{mean:.2f} ± {se:.2f}"
            )
        if c.refit_samples:  # the same estimate with an encoder fitted afresh to the frozen decoder
            log_px, refit_elbo = estimators.log_likelihood_refit(
                model, train_x, test_x[:c.is_points], c.refit_samples, k=c.is_k, seed=c.seed,
                dynamic_binarization=c.binarize == "dynamic")
            mean, se = with_se(log_px)
            extra_metrics.update(test_log_px_refit=mean, test_log_px_refit_se=se,
                                 refit_train_elbo=refit_elbo)
            print(
                f"... with an encoder refitted for {c.refit_samples:,} samples: {mean:.2f} ± "
                f"{se:.2f} "
                f"(its training ELBO {refit_elbo:.2f})")
        if c.appd_points:
            # chains from q(z|x) ("encoder") or from the prior ("prior")
            points = test_x[:c.appd_points]
            z_init = None
            if c.appd_start == "encoder":
                z_init = estimators.encoder_sample(model, points, seed=c.seed)
            mean, se = with_se(
                estimators.log_likelihood_appendix_d(model, points, z_init=z_init, seed=c.seed))
            extra_metrics.update(test_log_px_appd=mean, test_log_px_appd_se=se)
            print(
                f"test log p(x), Appendix D's estimator on {c.appd_points} points: {mean:.2f} ± "
                f"{se:.2f}"
            )
        save_run(run_dir, saved, history, model, extra_metrics)
        checkpoint.unlink(missing_ok=True)
    return load_run(run_dir)
