"""The experiment grid: every protocol, every profile's budgets and every run, written once as data.

Everything else asks this module: the Makefile (`python -m aevb.grid runs`, `... params RUN`), the
figure notebooks and the scorecard (`runs(protocol="kingma", dataset="mnist")`), and the tests.
Adding a latent dimension, a seed or a protocol is a one-line change below; `make paper` then
trains exactly the new runs. This module needs nothing beyond Python's standard library, so that
make can read it before the project's environment exists.
"""
import argparse
import importlib.util
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("smoke", "default", "paper")

# ---- protocols: the setups the papers describe, as parameters of notebooks/train.ipynb -----------
# Kingma & Welling's Adagrad, as their code runs it (anglepy, wzoptim.py): minibatches that only
# accumulate squared gradients before the first update, 101 of them (`nsteps[0] > warmup` with
# warmup=100, counted from 0); an N(0, I) prior on the weight matrices; their data's pixels, grey
# level / 256 (aevb/data.py)
ADAGRAD = dict(optimizer="adagrad", weight_prior=True, warmup_steps=101, pixel_scale=256)
KINGMA = dict(ADAGRAD, lr_choices=[0.01, 0.02, 0.1])
# App. D's chains for all three algorithms as anglepy's hmc_est.py `ll_estimator` runs them: from
# the model's `gen_xz`, which for models/MLBN.py draws z ~ N(0, I) whatever x, then kept across
# evaluations
FIG3 = dict(ADAGRAD, binarize="none", hidden=[100], lr=0.02, appd_start="prior")
# Where the paper is silent, each algorithm's model as anglepy's code of the paper's time trains it
# (aevb/released.py: RECOGNITION): AEVB's log-variance layer and output biases from zero,
# wake-sleep's recognition model as models/MLBN_Inverse.py, and minibatches drawn with replacement
# for both (wzoptim.py: `step_va`, `step_wakesleep`: np.random.randint)
RELEASED = dict(recognition="released", minibatches="with_replacement")
# the paper's text alone: every parameter N(0, 0.01), minibatches in epochs (`kingma-paper`)
KINGMA_PAPER_MNIST = dict(KINGMA, binarize="none", hidden=[500], train_size=50_000)
KINGMA_MNIST = dict(KINGMA_PAPER_MNIST, **RELEASED)
# Burda et al.'s paper states Adam with eps = 1e-4; their code (yburda/iwae, iwae.py:
# `gradIminibatch_srng`) takes the gradient of the minibatch's summed bound; ours is of the mean, 20
# (the minibatch) times smaller, and the paper's Adam is invariant to the gradient's scale but for
# eps, so the paper's Adam on their summed gradient is ours with eps = 1e-4 / 20 (their released
# optimizer is another: protocol burda-adam-iwae). Where the paper is silent, their code: the
# decoder's output bias from the logit of the training mean (datasets.py: `get_train_bias_np`,
# iwae.py: `random_iwae`) and the last 400 training images held out (datasets.py:
# `binarized_mnist(n_validation=400)`): 59,600 trained on
BURDA = dict(binarize="dynamic", hidden=[200, 200], batch_size=20, optimizer="adam", lr=0.001,
             adam_eps=1e-4 / 20, lr_schedule="burda", init="glorot", weight_prior=False,
             output_bias="data_mean", validation_size=400)
# batch MCEM (anglepy, wzoptim.py: `step_batch_mcem`): every training point's chain moves, then the
# M-steps are on the whole training set (batch_size 0); their M-step (`dostep_m`) is not released,
# so it has no warm-up here. Its HMC step size is one for all chains, tuned x or / 1.25 toward 90%
# acceptance from 1e-2 (hmc.py: `hmc_step_autotune`, which `step_batch_mcem` calls with
# hmc_stepsize=1e-2)
BATCH_MCEM = dict(mcem_updates=5, batch_size=0, warmup_steps=0, mcem_step_size_rule="global")
PROTOCOLS = {
    # the replication report's notebook as it ran: grey-level MNIST, 784-500-Nz tanh, Adam 1e-3
    ("mnist", "report"): dict(binarize="none", hidden=[500], optimizer="adam", lr=0.001,
                              weight_prior=False),
    # Kingma & Welling: Adagrad with the global step chosen from {0.01, 0.02, 0.1} on the training
    # set; 500 tanh units and their 50,000 training images for MNIST, 200 and a Gaussian decoder for
    # Frey Face; each algorithm's model and minibatches as their released code has them (RELEASED)
    ("mnist", "kingma"): KINGMA_MNIST,
    ("frey", "kingma"): dict(KINGMA, hidden=[200], **RELEASED),
    # ... by the paper's text alone (the protocol before RELEASED), by the rule and at step 0.02:
    # with `kingma` and `kingma-lr0.02` they separate the recognition model from the step size
    ("mnist", "kingma-paper"): KINGMA_PAPER_MNIST,
    ("mnist", "kingma-paper-lr0.02"): dict(KINGMA_PAPER_MNIST, lr_choices=[], lr=0.02),
    ("frey", "kingma-paper"): dict(KINGMA, hidden=[200]),
    # what moves wake-sleep's bound under Kingma's protocol: one change each
    # (notebooks/wake_sleep_gap.ipynb)
    # the protocol before
    ("mnist", "kingma-nowarmup-60k"): dict(KINGMA_MNIST, warmup_steps=0, train_size=0),
    ("mnist", "kingma-60k"): dict(KINGMA_MNIST, train_size=0),
    ("mnist", "kingma-trial5e5"): dict(KINGMA_MNIST, lr_trial_samples=500_000),
    ("mnist", "kingma-lr0.02"): dict(KINGMA_MNIST, lr_choices=[], lr=0.02),
    ("mnist", "kingma-binary"): dict(KINGMA_MNIST, binarize="dynamic"),
    # Kingma & Welling's Figure 3: Nz 3, 100 tanh units, Adagrad 0.02 for all three algorithms, the
    # weight prior, the first N training points (batch MCEM with its 5 M-steps: in RUNS)
    ("mnist", "fig3n1000"): dict(FIG3, train_size=1000),
    ("mnist", "fig3n50000"): dict(FIG3, train_size=50000),
    # MCEM on-line: minibatches of 100, not published
    ("mnist", "fig3n1000-online"): dict(FIG3, train_size=1000),
    # ... App. D's chains from q(z|x) (MCEM's training points: from its own chains), a labelled
    # alternative
    ("mnist", "fig3n1000-encoder"): dict(FIG3, train_size=1000, appd_start="encoder"),
    # Burda et al. (Sec. 5.1): dynamically binarized MNIST (60,000 images), 784-200-200-50 tanh,
    # minibatch 20, Adam with beta = (0.9, 0.999) and eps = 1e-4, 3^i passes at 0.001 * 10^(-i/7)
    # for i = 0..7, Glorot's init
    ("mnist", "burda"): BURDA,
    # ... with eps = 1e-4 on the mean's gradient, 20 times theirs (what the protocol had before)
    ("mnist", "burda-eps1e-4"): dict(BURDA, adam_eps=1e-4),
    # ... with their released Adam (optimizers.py), a measurement that judges no published row
    ("mnist", "burda-adam-iwae"): dict(BURDA, optimizer="adam_iwae", adam_eps=1e-8),
    # ... with the output bias at Glorot's zero, not the logit of the training mean (what it moves
    # at 1 pass)
    ("mnist", "burda-zero-bias"): dict(BURDA, output_bias="init"),
    # ... on Larochelle's statically binarized MNIST, trained on its 50,000 training images (their
    # App. D); their 10,000 validation images are the static set's own (datasets.py:
    # `binarized_mnist_fixed_binarization`), not among our 50,000
    ("mnist", "burda-static"): dict(BURDA, binarize="static", validation_size=0),
}

# ---- budgets: what a profile changes (never code) ------------------------------------------------
# Keyed like PROTOCOLS. "estimates": the test log-likelihoods that the runs marked so in RUNS get:
# by importance sampling with their own encoder (is_points, is_k), with an encoder refitted to the
# frozen decoder (refit_samples) and by App. D's estimator (appd_points). Figure 3's budget also
# sizes its log p(x) estimates (the first log_px_points train and test points; log_px_k importance
# samples each).
SMOKE = dict(samples=2000, train_size=1000, test_size=200, eval_points=3)  # in minutes
SMOKE_FIG3 = dict(samples=2000, test_size=200, eval_points=1, log_px_points=10, log_px_k=100)
# Kingma's Adagrad warms up for 100 minibatches, more than a smoke run's 20: there the warm-up is 5
# minibatches and the step-size trial 10, so that every smoke run and every trial updates its
# parameters
SMOKE_ADAGRAD = dict(warmup_steps=5, lr_trial_samples=1000)
DEFAULT_FIG3 = dict(samples=300_000, eval_points=6, log_px_points=100, log_px_k=500)
PAPER = dict(samples=100_000_000, checkpoint_every=5_000_000)  # the papers' 10^8 samples per run
PAPER_FIG3 = dict(samples=60_000_000, checkpoint_every=5_000_000, log_px_points=1000, log_px_k=5000)
PAPER_FIG3_N50000 = dict(PAPER_FIG3, samples=68_000_000)  # the published curve's last point
# Burda's 3280 passes (stages 0..7) in the paper profile; stage 0 (1 pass) in the default (smoke:
# SMOKE)
BURDA_PASSES = {"paper": 3280, "default": 1}
BURDA_IMAGES = {
    "burda": 59_600, "burda-eps1e-4": 59_600, "burda-adam-iwae": 59_600, "burda-zero-bias": 59_600,
    "burda-static": 50_000
}  # the training images (dynamic: less the 400 held out)
KINGMA_PAPER = ["kingma-paper", "kingma-paper-lr0.02"]  # the paper's text alone
# one change each from MNIST's `kingma` (notebooks/wake_sleep_gap.ipynb)
KINGMA_VARIANTS = [protocol for dataset, protocol in PROTOCOLS if dataset == "mnist"
                   and protocol.startswith("kingma-") and protocol not in KINGMA_PAPER]
BUDGETS = {
    "smoke": {
        ("mnist", "report"): SMOKE,
        ("mnist", "kingma"): dict(SMOKE, **SMOKE_ADAGRAD),
        **{("mnist", v): dict(SMOKE, **SMOKE_ADAGRAD)
           for v in KINGMA_VARIANTS if v != "kingma-nowarmup-60k"},
        # the protocol without a warm-up
        ("mnist", "kingma-nowarmup-60k"): dict(SMOKE, lr_trial_samples=1000),
        ("frey", "kingma"): dict(samples=2000, test_size=100, eval_points=3, **SMOKE_ADAGRAD),
        ("mnist", "fig3n1000"): dict(SMOKE_FIG3, warmup_steps=5),
        # batch MCEM: 1 iteration
        ("mnist", "fig3n50000"): dict(SMOKE_FIG3, warmup_steps=5, train_size=2000),
        ("mnist", "fig3n1000-online"): dict(SMOKE_FIG3, warmup_steps=5),
        ("mnist", "fig3n1000-encoder"): dict(SMOKE_FIG3, warmup_steps=5),
        **{("mnist", p): dict(SMOKE, is_points=20, is_k=100) for p in BURDA_IMAGES},
        **{("mnist", p): dict(SMOKE, **SMOKE_ADAGRAD) for p in KINGMA_PAPER},
        ("frey", "kingma-paper"): dict(samples=2000, test_size=100, eval_points=3, **SMOKE_ADAGRAD),
        "estimates": dict(is_points=20, is_k=100, refit_samples=2000, appd_points=10),
    },
    "default": {  # the report's 50 epochs (3x10^6 samples) for MNIST; sized for a CPU
        ("mnist", "report"): dict(samples=3_000_000),
        ("mnist", "kingma"): dict(samples=3_000_000),
        **{("mnist", v): dict(samples=3_000_000) for v in KINGMA_VARIANTS + KINGMA_PAPER},
        ("frey", "kingma"): dict(samples=1_000_000),
        ("frey", "kingma-paper"): dict(samples=1_000_000),
        ("mnist", "fig3n1000"): DEFAULT_FIG3,
        ("mnist", "fig3n50000"): DEFAULT_FIG3,
        ("mnist", "fig3n1000-online"): DEFAULT_FIG3,
        ("mnist", "fig3n1000-encoder"): DEFAULT_FIG3,
        **{("mnist", p): dict(samples=BURDA_PASSES["default"] * n, is_points=500, is_k=5000)
           for p, n in BURDA_IMAGES.items()},
        "estimates": dict(is_points=500, is_k=1000, refit_samples=300_000, appd_points=100),
    },
    "paper": {  # the papers' budgets: a machine with a GPU
        ("mnist", "report"): dict(samples=3_000_000),  # the report's 50 epochs
        ("mnist", "kingma"): PAPER,
        # the gap is measured at 3x10^6
        **{("mnist", v): dict(samples=3_000_000) for v in KINGMA_VARIANTS},
        ("frey", "kingma"): PAPER,
        ("mnist", "fig3n1000"): PAPER_FIG3,
        ("mnist", "fig3n50000"): PAPER_FIG3_N50000,
        ("mnist", "fig3n1000-online"): PAPER_FIG3,
        ("mnist", "fig3n1000-encoder"): PAPER_FIG3,
        # where Figure 2's gap at Nz = 200 is measured (kingma-lr0.02 too: a variant)
        **{("mnist", p): dict(samples=3_000_000) for p in KINGMA_PAPER},
        ("frey", "kingma-paper"): PAPER,
        **{("mnist", p): dict(samples=BURDA_PASSES["paper"] * n, checkpoint_every=5_000_000,
                              is_points=10_000, is_k=5000) for p, n in BURDA_IMAGES.items()},
        "estimates": dict(is_points=10_000, is_k=5000, refit_samples=3_000_000, appd_points=1000),
    },
}

# ---- the runs: <dataset>/<algorithm>_z<Nz>_<protocol>_s<seed> ------------------------------------
# Each line is a sweep: every algorithm x latent dimension x seed (`params`: more parameters of its
# runs; `profiles`: only in these profiles, where not in all). Longest first: make -j starts them
# first.
RUNS = [
    # Kingma & Welling's Figure 2, MNIST (Nz = 20 also gets test log-likelihoods); seeds 2 and 3 in
    # the paper profile (the default's hour has room for one seed)
    dict(dataset="mnist", protocol="kingma", algorithms=["aevb", "wake_sleep"], latent_dims=[20],
         seeds=[1], estimates=[20]),
    dict(dataset="mnist", protocol="kingma", algorithms=["aevb", "wake_sleep"], latent_dims=[20],
         seeds=[2, 3], estimates=[20], profiles=["smoke", "paper"]),
    dict(dataset="mnist", protocol="kingma", algorithms=["aevb", "wake_sleep"],
         latent_dims=[3, 5, 10, 200], seeds=[1]),
    # why wake-sleep falls at Nz = 200 (notebooks/kingma2013.ipynb): the recognition model (as
    # released, or by the paper's text) x the step (by the rule, or fixed at 0.02), three seeds each
    # in every profile: the cause of the gap rests on them
    dict(dataset="mnist", protocol="kingma", algorithms=["wake_sleep"], latent_dims=[200],
         seeds=[2, 3]),
    *[dict(dataset="mnist", protocol=p, algorithms=["wake_sleep"], latent_dims=[200],
           seeds=[1, 2, 3]) for p in ["kingma-lr0.02", *KINGMA_PAPER]],
    # what the released models change for AEVB and wake-sleep at Nz = 20
    dict(dataset="mnist", protocol="kingma-paper", algorithms=["aevb", "wake_sleep"],
         latent_dims=[20], seeds=[1]),
    dict(dataset="mnist", protocol="kingma", algorithms=["aevb", "wake_sleep"],
         latent_dims=[3, 5, 10], seeds=[2, 3], profiles=["paper"]),
    dict(dataset="mnist", protocol="kingma", algorithms=["aevb"], latent_dims=[200],
         seeds=[2, 3], profiles=["paper"]),
    # the report's latent sweep (AEVB), and its Table 1 (Nz = 20) with AEVB and wake-sleep; seeds 2
    # and 3 in the paper profile (and the smoke one, which checks the seeds' statistics)
    dict(dataset="mnist", protocol="report", algorithms=["aevb"], latent_dims=[2, 3, 5, 10],
         seeds=[1]),
    dict(dataset="mnist", protocol="report", algorithms=["aevb", "wake_sleep"], latent_dims=[20],
         seeds=[1], estimates=[20]),
    dict(dataset="mnist", protocol="report", algorithms=["aevb", "wake_sleep"], latent_dims=[20],
         seeds=[2, 3], estimates=[20], profiles=["smoke", "paper"]),
    # Kingma & Welling's Figure 2, Frey Face
    dict(dataset="frey", protocol="kingma", algorithms=["aevb", "wake_sleep"],
         latent_dims=[2, 5, 10, 20], seeds=[1]),
    # ... wake-sleep by the paper's text alone, where it left the published level
    dict(dataset="frey", protocol="kingma-paper", algorithms=["wake_sleep"], latent_dims=[10, 20],
         seeds=[1]),
    # what moves wake-sleep's bound at Nz = 20 (one change each from the kingma protocol): an
    # investigation, in the paper profile (and the smoke one, which checks its notebook), not in the
    # default's hour
    *[
        dict(dataset="mnist", protocol=v, algorithms=["wake_sleep"], latent_dims=[20], seeds=[1],
             profiles=["smoke", "paper"]) for v in KINGMA_VARIANTS
    ],
    # Kingma & Welling's Figure 3; MCEM with App. E's 5 decoder updates per HMC sample, and with 1
    # for comparison
    dict(dataset="mnist", protocol="fig3n1000", algorithms=["aevb", "wake_sleep"], latent_dims=[3],
         seeds=[1]),
    dict(dataset="mnist", protocol="fig3n1000", algorithms=["mcem"], latent_dims=[3], seeds=[1],
         params=BATCH_MCEM),
    dict(dataset="mnist", protocol="fig3n1000-online", algorithms=["mcem"], latent_dims=[3],
         seeds=[1], params=dict(mcem_updates=5)),
    # ... the same runs with App. D's chains from the encoder (MCEM: its own chains), beside the
    # released start
    dict(dataset="mnist", protocol="fig3n1000-encoder", algorithms=["aevb", "wake_sleep"],
         latent_dims=[3], seeds=[1]),
    dict(dataset="mnist", protocol="fig3n1000-encoder", algorithms=["mcem"], latent_dims=[3],
         seeds=[1], params=BATCH_MCEM),
    dict(dataset="mnist", protocol="fig3n50000", algorithms=["aevb", "wake_sleep"], latent_dims=[3],
         seeds=[1]),
    dict(dataset="mnist", protocol="fig3n50000", algorithms=["mcem"], latent_dims=[3], seeds=[1],
         params=BATCH_MCEM),
    # Burda et al.'s VAE (k = 1) and IWAE (k = 50) on dynamically binarized MNIST, the VAE with the
    # Adam eps the protocol had before; on statically binarized MNIST in the paper profile
    dict(dataset="mnist", protocol="burda", algorithms=["iwae"], latent_dims=[50], seeds=[1],
         params=dict(n_samples=50)),
    dict(dataset="mnist", protocol="burda-static", algorithms=["iwae"], latent_dims=[50], seeds=[1],
         params=dict(n_samples=50), profiles=["smoke", "paper"]),
    dict(dataset="mnist", protocol="burda", algorithms=["aevb"], latent_dims=[50], seeds=[1]),
    dict(dataset="mnist", protocol="burda-eps1e-4", algorithms=["aevb"], latent_dims=[50],
         seeds=[1]),
    # ... and with their released Adam, and with the output bias from zero (labelled measurements)
    dict(dataset="mnist", protocol="burda-adam-iwae", algorithms=["aevb"], latent_dims=[50],
         seeds=[1]),
    dict(dataset="mnist", protocol="burda-zero-bias", algorithms=["aevb"], latent_dims=[50],
         seeds=[1]),
    dict(dataset="mnist", protocol="burda-static", algorithms=["aevb"], latent_dims=[50], seeds=[1],
         profiles=["smoke", "paper"]),
]

# ---- what each figure notebook reads (make re-runs a notebook when one of these runs changes): the
# runs that match a filter (as `runs` takes it), or any of a list of filters
# -----------------------------------
NOTEBOOK_RUNS = {
    "replication_report": dict(protocol="report"),
    "kingma2013": [
        dict(protocol=["report", "kingma"]),
        dict(protocol="kingma-lr0.02", latent_dim=200),
        dict(protocol=KINGMA_PAPER)
    ],
    "marginal_likelihood": dict(
        protocol=["fig3n1000", "fig3n50000", "fig3n1000-online", "fig3n1000-encoder"]),
    "burda2015": dict(protocol=list(BURDA_IMAGES)),
    # the one-change runs (seed 1), and both algorithms' Nz = 20 seeds, judged by estimators they
    # share
    "wake_sleep_gap": [
        dict(protocol=["kingma", *KINGMA_VARIANTS], dataset="mnist", algorithm="wake_sleep",
             latent_dim=20, seed=1),
        dict(protocol=["report", "kingma"], dataset="mnist", latent_dim=20)
    ],
    "scorecard": dict(),  # every run
}


# --------------------------------------------------------------------------------------------------
# Queries

@dataclass(frozen=True)
class Run:
    dataset: str
    algorithm: str
    latent_dim: int
    protocol: str
    seed: int
    estimates: bool = False  # a test log-likelihood by importance sampling after training
    extra: tuple = ()  # its sweep's `params`, as sorted (name, value) pairs

    @property
    def name(self):
        """'<dataset>/<algorithm>_z<Nz>_<protocol>_s<seed>', the run's folder below the profile's
        runs folder."""
        return f"{self.dataset}/{self.algorithm}_z{self.latent_dim}_{self.protocol}_s{self.seed}"

    def folder(self, runs_dir):
        return Path(runs_dir) / self.name

    def params(self, profile, grid=None):
        """The parameters of notebooks/train.ipynb that make this run in `profile`."""
        grid = grid or sys.modules[__name__]
        if profile not in grid.BUDGETS:
            raise ValueError(
                f"profile {profile!r} is not known; expected one of {', '.join(grid.BUDGETS)}")
        budgets = grid.BUDGETS[profile]
        key = (self.dataset, self.protocol)
        return {
            "dataset": self.dataset, "protocol": self.protocol, **grid.PROTOCOLS[key],
            **budgets[key], **(budgets["estimates"] if self.estimates else {}),
            **dict(self.extra), "algorithm": self.algorithm, "latent_dim": self.latent_dim,
            "seed": self.seed
        }


def _matches(value, wanted):
    return wanted is None or value == wanted or (isinstance(wanted,
                                                            (list, tuple, set)) and value in wanted)


def runs(dataset=None, algorithm=None, latent_dim=None, protocol=None, seed=None, grid=None,
         profile=None):
    """The grid's runs, in its order, that match every filter given (a value, or a list of values);
    profile: only the runs that profile trains (None: the runs of every profile)."""
    grid = grid or sys.modules[__name__]
    found = []
    for sweep in grid.RUNS:
        if profile is not None and profile not in sweep.get("profiles", [profile]):
            continue
        for algorithm_, latent_dim_, seed_ in itertools.product(sweep["algorithms"],
                                                                sweep["latent_dims"],
                                                                sweep["seeds"]):
            run = Run(sweep["dataset"], algorithm_, latent_dim_, sweep["protocol"], seed_,
                      latent_dim_ in sweep.get("estimates", ()),
                      tuple(sorted(sweep.get("params", {}).items())))
            if all(
                    _matches(getattr(run, k), v)
                    for k, v in (("dataset", dataset), ("algorithm", algorithm),
                                 ("latent_dim", latent_dim), ("protocol", protocol), ("seed",
                                                                                      seed))):
                found.append(run)
    return found


def run(name, grid=None):
    """The run named '<dataset>/<algorithm>_z<Nz>_<protocol>_s<seed>'."""
    for r in runs(grid=grid):
        if r.name == name:
            return r
    raise KeyError(f"{name} is not a run of the experiment grid (aevb/grid.py)")


def latent_dims(**filters):
    """The sorted latent dimensions of the runs that match (see `runs`)."""
    return sorted({r.latent_dim for r in runs(**filters)})


def select(query, protocol=None, grid=None):
    """The runs a published_numbers.csv `runs` query names: 'dataset=mnist algorithm=aevb,wake_sleep
    latent_dim=20', each field one value or several separated by commas; a field left out matches
    all."""
    filters = {}
    for part in query.split():
        key, _, values = part.partition("=")
        if key not in ("dataset", "algorithm", "latent_dim", "protocol", "seed") or not values:
            raise ValueError(f"bad runs query {query!r}: {part!r} is not field=value[,value...]")
        filters[key] = [int(v) if key in ("latent_dim", "seed") else v for v in values.split(",")]
    if protocol:
        filters.setdefault("protocol", protocol)
    return runs(grid=grid, **filters)


def notebook_runs(notebook, grid=None, profile=None):
    """The runs a figure notebook reads, in the grid's order."""
    grid = grid or sys.modules[__name__]
    filters = grid.NOTEBOOK_RUNS[notebook]
    selected = {r for f in (filters if isinstance(filters, list) else [filters])
                for r in runs(grid=grid, profile=profile, **f)}
    return [r for r in runs(grid=grid, profile=profile) if r in selected]


def load(path):
    """A grid module from a file (a test's own tiny grid); None: this one."""
    if not path:
        return sys.modules[__name__]
    spec = importlib.util.spec_from_file_location("custom_grid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# For make: `python -m aevb.grid [--grid FILE] runs [--notebook NAME]` prints run names, `...
# notebooks` the figure notebooks;
# `python -m aevb.grid [--grid FILE] params RUN --profile P --write FILE` writes the run's
# parameters and the training code's hash as JSON, only when they changed (so make retrains exactly
# what changed).

def main(argv=None):
    parser = argparse.ArgumentParser(description="The experiment grid, for make")
    parser.add_argument("--grid", help="a grid file other than aevb/grid.py (tests)")
    sub = parser.add_subparsers(dest="command", required=True)
    list_runs = sub.add_parser("runs", help="print the run names, one line")
    list_runs.add_argument("--notebook", help="only the runs this figure notebook reads")
    list_runs.add_argument("--profile", help="only the runs this profile trains")
    sub.add_parser("notebooks", help="print the figure notebooks, one line")
    params = sub.add_parser("params", help="write a run's parameters")
    params.add_argument("run")
    params.add_argument("--profile", required=True)
    params.add_argument("--write", required=True, type=Path)
    args = parser.parse_args(argv)
    grid = load(args.grid)
    if args.command == "runs":
        if args.profile is not None and args.profile not in PROFILES:
            parser.error(
                f"profile {args.profile!r} is not known; expected one of {', '.join(PROFILES)}")
        selected = notebook_runs(args.notebook, grid, args.profile) if args.notebook else runs(
            grid=grid, profile=args.profile)
        print(" ".join(r.name for r in selected))
        return
    if args.command == "notebooks":
        print(" ".join(grid.NOTEBOOK_RUNS))
        return
    from aevb.runs import code_hash
    text = json.dumps(
        {"parameters": run(args.run, grid).params(args.profile, grid), "code_hash": code_hash()},
        indent=1, sort_keys=True) + "\n"
    if not args.write.exists() or args.write.read_text() != text:
        from aevb.files import atomic_write_text
        atomic_write_text(args.write, text)


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError) as e:
        # a KeyError's text without quotes
        sys.exit(f"aevb.grid: {e.args[0] if isinstance(e, KeyError) else e}")
