"""What a protocol says is what trains. For every run of every profile of the grid, train_run is called
with vae_core.train, the data loaders and the estimators replaced by recorders (nothing trains), and each
parameter of the run (every field of RunConfig) is found where it is used, unchanged or as the documented
derivation; then what reaches vae_core.train is held against the papers' own values. A new RunConfig
field needs one line in ARRIVES below, saying where it arrives, or test_every_field_says_where_it_arrives
fails. Then vae_core.train itself: the optimizer it builds and the learning rate of every step, by their
numbers (Burda et al.'s schedule, Adam's betas and eps, Adagrad's warm-up)."""
import dataclasses
import inspect
import math

import pytest
import torch

import vae_core as vc
from aevb import data, estimators, experiment, grid, released
from aevb.experiment import RunConfig, log_spaced_points, select_device

# ---- the recorders -------------------------------------------------------------------------------------

# Stand-ins for the data files, of the real sizes: row i of a split holds i in every pixel (a test row -1 - i),
# so that which rows reached a call can be read off it; views of one column, so they cost no memory.
SIZES = {("mnist", "train", "static"): 50_000, ("mnist", "train"): 60_000, ("mnist", "test"): 10_000,
         ("frey", "train"): 1765, ("frey", "test"): 200}
DIMS = {"mnist": 784, "frey": 560}


def fake_split(dataset, split, binarize):
    n = SIZES.get((dataset, split, binarize), SIZES[dataset, split])
    rows = torch.arange(n, dtype=torch.float32) if split == "train" else -1.0 - torch.arange(n, dtype=torch.float32)
    return rows[:, None].expand(n, DIMS[dataset])


def row_ids(x):
    return x[:, 0].tolist()


def first_rows(x, n, split="train"):
    return row_ids(x) == (list(range(n)) if split == "train" else [-1.0 - i for i in range(n)])


ESTIMATORS = {name: getattr(estimators, name) for name in ("log_likelihood", "log_likelihood_hmc",
                                                           "log_likelihood_appendix_d", "log_likelihood_refit",
                                                           "encoder_sample")}


class Recorder:
    """The calls train_run makes, in order, each (name, arguments by name); `phase` says whether a call came
    from inside vae_core.train's eval_fn."""
    TRAIN_SIGNATURE = inspect.signature(vc.train)

    def __init__(self, monkeypatch, winner=None):
        self.calls, self.phase, self.winner = [], "run", winner
        monkeypatch.setattr(data, "load", self.load)
        monkeypatch.setattr(vc, "train", self.train)
        for name, real in ESTIMATORS.items():
            monkeypatch.setattr(estimators, name, self.estimator(name, real))
        monkeypatch.setattr(experiment, "save_run", self.save_run)
        monkeypatch.setattr(experiment, "load_run", lambda run_dir: self.saved)
        monkeypatch.setattr(experiment, "code_hash", lambda: "code")

    def of(self, name, phase=None):
        return [args for n, args, p in self.calls if n == name and (phase is None or p == phase)]

    def load(self, dataset, split, binarize="none", data_dir=None, pixel_scale=255):
        self.calls.append(("load", dict(dataset=dataset, split=split, binarize=binarize, pixel_scale=pixel_scale),
                           self.phase))
        return fake_split(dataset, split, binarize), None

    def train(self, *args, **kwargs):
        bound = self.TRAIN_SIGNATURE.bind(*args, **kwargs)  # a name vae_core.train does not take fails here
        bound.apply_defaults()
        call = {**{k: v for k, v in bound.arguments.items() if k != "options"}, **bound.arguments["options"]}
        self.calls.append(("train", call, self.phase))
        if call["eval_fn"] is not None:  # what an evaluation computes, with the state the algorithm keeps
            self.phase = "eval_fn"
            state = ({"chains": {"z": torch.randn(len(call["train_x"]), call["model"].z_dim)}}
                     if call["algorithm"] == "mcem" else {})
            call["eval_fn_state"] = state
            call["eval_fn_returns"] = call["eval_fn"](call["model"], state)
            self.phase = "run"
        # a step-size trial scores highest at the winner (the rule's choice), lower the farther from it
        score = -abs(math.log(call["lr"] / self.winner)) if self.winner else -100.0
        return [{"samples": call["samples"], "epoch": 1.0, "train_elbo": score - 100.0, "wall_time": 0.0}]

    def estimator(self, name, real):
        signature = inspect.signature(real)

        def fake(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            call = dict(bound.arguments)
            self.calls.append((name, call, self.phase))
            n = len(call["x"])
            if name == "encoder_sample":  # a distinct state per call, to be found where it arrives
                call["returned"] = torch.randn(n, call["model"].z_dim)
                return call["returned"]
            values = torch.zeros(n, dtype=torch.float64)
            if name == "log_likelihood_refit":
                return values, -100.0
            if name == "log_likelihood_appendix_d" and call["return_chains"]:
                call["returned_chains"] = torch.randn(n, call["model"].z_dim)
                return values, call["returned_chains"]
            return values
        return fake

    def save_run(self, run_dir, config, history, model, extra_metrics=None):
        self.saved = {"config": config, "history": history, "model": model, "metrics": dict(extra_metrics or {})}
        self.calls.append(("save_run", self.saved, self.phase))
        return self.saved["metrics"]


def recorded_run(monkeypatch, tmp_path, config):
    """train_run(config) with everything it calls recorded; the step-size rule's winner is its middle candidate."""
    choices = sorted(config.lr_choices)
    recorder = Recorder(monkeypatch, winner=choices[len(choices) // 2] if choices else None)
    experiment.train_run(config, tmp_path / "run", progress="none")
    return recorder


# ---- where each field arrives ------------------------------------------------------------------------------
# Each check takes (config, recorder, final): final is the call of vae_core.train that trains the run (the last);
# the calls before it are the step-size trials.

def trials(rec):
    return rec.of("train")[:-1]


def train_data(c, rec, final):
    return final["train_x"], final["test_x"]


def check_data(c, rec, final):
    loads = rec.of("load")
    assert sorted(a["split"] for a in loads) == ["test", "train"]
    for a in loads:
        assert (a["dataset"], a["binarize"], a["pixel_scale"]) == (c.dataset, c.binarize, c.pixel_scale), a
    assert final["model"].x_dim == DIMS[c.dataset]
    assert final["model"].likelihood == ("bernoulli" if c.dataset == "mnist" else "gaussian")
    assert final["dynamic_binarization"] == (c.binarize == "dynamic")
    for refit in rec.of("log_likelihood_refit"):
        assert refit["dynamic_binarization"] == (c.binarize == "dynamic")


def check_algorithm(c, rec, final):
    assert all(call["algorithm"] == c.algorithm for call in rec.of("train"))
    estimator = "log_likelihood_hmc" if c.algorithm == "mcem" else "log_likelihood"  # MCEM has no encoder
    assert not rec.of("log_likelihood_hmc" if estimator == "log_likelihood" else "log_likelihood")
    if c.is_points or c.log_px_points:
        assert rec.of(estimator)


def check_options(c, rec, final):  # the algorithm's own options: n_samples (L, IWAE's k), MCEM's updates
    takes = vc.ALGORITHMS[c.algorithm].options
    for call in rec.of("train"):
        assert ("n_samples" in takes) == ("n_samples" in call) and ("updates" in takes) == ("updates" in call)
        if "n_samples" in takes:
            assert call["n_samples"] == c.n_samples
        if "updates" in takes:
            assert call["updates"] == c.mcem_updates
        if "step_size_rule" in takes:
            assert call["step_size_rule"] == c.mcem_step_size_rule


def check_model(c, rec, final):
    config = final["model"].config
    expected = {"z_dim": c.latent_dim, "hidden": list(c.hidden), "activation": c.activation, "init": c.init,
                "init_std": c.init_std}
    assert {k: config[k] for k in expected} == expected
    torch.manual_seed(c.seed)  # the initialization is the seed's
    model = vc.VAE(DIMS[c.dataset], c.latent_dim, c.hidden, c.activation, config["likelihood"], c.init_std, c.init,
                   released.recognition(c.recognition, c.algorithm))
    assert config["recognition"] == released.RECOGNITION.get(c.algorithm, c.recognition) if \
        c.recognition == "released" else config["recognition"] == c.recognition
    if c.output_bias == "data_mean":  # Burda et al.'s start: the logit of the trained-on points' mean
        with torch.no_grad():
            released.init_output_bias(model, final["train_x"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), final["model"].state_dict().values()))
    assert all(call["model"].config == config for call in trials(rec))  # each trial from a copy of it
    assert all(call["model"] is not final["model"] for call in trials(rec))


def check_samples(c, rec, final):
    assert final["samples"] == c.samples and final["epochs"] is None


def check_batch_size(c, rec, final):  # 0: the whole training set (batch MCEM)
    expected = c.batch_size or len(final["train_x"])
    assert all(call["batch_size"] == expected for call in rec.of("train"))
    assert rec.saved["config"]["batch_size"] == expected


def check_optimizer_settings(c, rec, final):
    for call in rec.of("train"):  # the trials train as the run does, but for lr and samples
        for name in ("adam_eps", "weight_prior", "warmup_steps", "lr_schedule", "minibatches"):
            assert call[name] == getattr(c, name), name
        if c.optimizer == "adam_iwae":  # their released Adam, built on the minibatch's summed gradient
            built = call["optimizer"]([torch.zeros(1, requires_grad=True)], lr=c.lr or 1e-3)
            assert isinstance(built, released.IwaeAdam)
        else:
            assert call["optimizer"] == c.optimizer


def check_lr(c, rec, final):
    if c.lr_choices:  # Kingma's rule: a trial of lr_trial_samples per candidate, from one initialization
        assert [call["lr"] for call in trials(rec)] == list(c.lr_choices)
        assert all(call["samples"] == c.lr_trial_samples for call in trials(rec))
        chosen = sorted(c.lr_choices)[len(c.lr_choices) // 2]  # the recorder's winner
        assert final["lr"] == chosen and rec.saved["metrics"]["lr"] == chosen
        assert rec.saved["config"]["lr"] is None  # chosen: a result, in the metrics
    else:
        assert not trials(rec) and final["lr"] == c.lr and rec.saved["metrics"]["lr"] == c.lr


def check_sizes(c, rec, final):  # the first train_size / test_size points, 0: all
    train_x, test_x = train_data(c, rec, final)
    n_train = SIZES.get((c.dataset, "train", c.binarize), SIZES[c.dataset, "train"])
    n_test = SIZES[c.dataset, "test"]
    assert first_rows(train_x, min(c.train_size or n_train, n_train) - c.validation_size)  # the last held out
    assert first_rows(test_x, min(c.test_size or n_test, n_test), "test")
    assert all(call["train_x"] is train_x and call["test_x"] is None for call in trials(rec))


def check_eval_points(c, rec, final):
    # log-spaced points, and where the run ends within an epoch, the start of that last epoch (its running bound)
    points = set(log_spaced_points(c.samples, c.eval_points))
    extra = set(final["eval_at"]) - points
    batch = final["batch_size"]
    last_epoch = c.samples - len(final["train_x"]) // batch * batch
    assert points <= set(final["eval_at"]) and extra <= {last_epoch}
    assert bool(extra) == (last_epoch > 0 and not c.log_px_points and last_epoch not in points)
    assert all(call["eval_at"] == [c.lr_trial_samples] for call in trials(rec))


def check_log_px_points(c, rec, final):  # Figure 3's log p(x) at each evaluation, train and test points
    if not c.log_px_points:
        assert final["eval_fn"] is None and not rec.of("log_likelihood_appendix_d", "eval_fn")
        return
    train_x, test_x = train_data(c, rec, final)
    appd = rec.of("log_likelihood_appendix_d", "eval_fn")
    estimate = rec.of("log_likelihood_hmc" if c.algorithm == "mcem" else "log_likelihood", "eval_fn")
    assert len(appd) == len(estimate) == 2
    for split, a, e, x in zip(("train", "test"), appd, estimate, (train_x, test_x)):
        n = min(c.log_px_points, len(x))
        assert first_rows(a["x"], n, split) and first_rows(e["x"], n, split)
        assert e["k"] == c.log_px_k and a["seed"] == c.seed and a["return_chains"]
    starts = [a["z_init"] for a in appd]
    if c.appd_start == "prior":  # every chain from the prior first (then from where the last ended)
        assert starts == [None, None] and not rec.of("encoder_sample", "eval_fn")
    elif c.algorithm == "mcem":  # MCEM's own chains for its training points; the prior, then the last end, for test
        assert torch.equal(starts[0], final["eval_fn_state"]["chains"]["z"][:len(appd[0]["x"])]) and starts[1] is None
    else:  # a model with an encoder: chains from q(z|x), as anglepy's ll_estimator (gen_xz)
        samples = rec.of("encoder_sample", "eval_fn")
        assert len(samples) == 2 and all(s["returned"] is z and s["seed"] == c.seed for s, z in zip(samples, starts))
        assert all(s["x"] is a["x"] for s, a in zip(samples, appd))
    assert set(final["eval_fn_returns"]) == {f"{split}_log_px_{how}{se}" for split in ("train", "test")
                                             for how in ("appd", "is") for se in ("", "_se")}


def after_training(rec, name):
    return rec.of(name, "run")


def check_is_points(c, rec, final):  # the test log-likelihood, once, on the final model
    estimate = "log_likelihood_hmc" if c.algorithm == "mcem" else "log_likelihood"
    calls = after_training(rec, estimate)
    if not c.is_points:
        assert not calls and "test_log_px_is" not in rec.saved["metrics"]
        return
    [call] = calls
    assert first_rows(call["x"], min(c.is_points, len(final["test_x"])), "test")
    assert call["k"] == c.is_k and call["model"] is final["model"]
    assert "test_log_px_is" in rec.saved["metrics"]


def check_refit(c, rec, final):
    calls = after_training(rec, "log_likelihood_refit")
    if not c.refit_samples:
        assert not calls
        return
    [call] = calls
    assert call["samples"] == c.refit_samples and call["k"] == c.is_k and call["seed"] == c.seed
    assert call["train_x"] is final["train_x"] and first_rows(call["x"], min(c.is_points, len(final["test_x"])), "test")


def check_appd_points(c, rec, final):  # App. D's estimate after training, chains from the encoder
    calls = after_training(rec, "log_likelihood_appendix_d")
    if not c.appd_points:
        assert not calls
        return
    [call] = calls
    if c.appd_start == "prior":
        assert call["z_init"] is None and not after_training(rec, "encoder_sample")
        assert first_rows(call["x"], min(c.appd_points, len(final["test_x"])), "test") and call["seed"] == c.seed
        return
    [sample] = after_training(rec, "encoder_sample")
    assert first_rows(call["x"], min(c.appd_points, len(final["test_x"])), "test")
    assert call["z_init"] is sample["returned"] and sample["x"] is call["x"]
    assert call["seed"] == sample["seed"] == c.seed and call["model"] is final["model"]


def check_checkpoint(c, rec, final):
    assert final["checkpoint"].every == c.checkpoint_every and final["checkpoint"].path.parent.name == "run"


def check_recorded(c, rec, final):  # the run's folder records what it is
    assert rec.saved["config"]["protocol"] == c.protocol and rec.saved["config"]["dataset"] == c.dataset


def check_seed(c, rec, final):
    assert all(call["seed"] == c.seed for call in rec.of("train"))
    for name in ("log_likelihood_appendix_d", "log_likelihood_refit", "encoder_sample"):
        assert all(call["seed"] == c.seed for call in rec.of(name)), name


def check_device(c, rec, final):
    assert all(call["device"] == select_device(c.device) for call in rec.of("train"))


ARRIVES = {  # RunConfig field -> the check that finds it where it is used
    "dataset": check_data, "binarize": check_data, "pixel_scale": check_data,
    "algorithm": check_algorithm, "mcem_updates": check_options, "n_samples": check_options,
    "latent_dim": check_model, "hidden": check_model, "activation": check_model, "init": check_model,
    "init_std": check_model,
    "samples": check_samples, "batch_size": check_batch_size,
    "optimizer": check_optimizer_settings, "adam_eps": check_optimizer_settings,
    "weight_prior": check_optimizer_settings, "warmup_steps": check_optimizer_settings,
    "lr_schedule": check_optimizer_settings,
    "lr": check_lr, "lr_choices": check_lr, "lr_trial_samples": check_lr,
    "train_size": check_sizes, "test_size": check_sizes,
    "eval_points": check_eval_points, "log_px_points": check_log_px_points, "log_px_k": check_log_px_points,
    "is_points": check_is_points, "is_k": check_is_points, "refit_samples": check_refit,
    "appd_points": check_appd_points, "checkpoint_every": check_checkpoint, "protocol": check_recorded,
    "seed": check_seed, "device": check_device,
    "recognition": check_model, "output_bias": check_model, "minibatches": check_optimizer_settings,
    "mcem_step_size_rule": check_options, "validation_size": check_sizes, "appd_start": check_log_px_points,
}


def test_every_field_says_where_it_arrives():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(ARRIVES) == fields, f"say where these arrive in ARRIVES: {sorted(fields - set(ARRIVES))}"


GRID_RUNS = [(profile, run.name) for profile in grid.PROFILES for run in grid.runs(profile=profile)]


@pytest.mark.parametrize("profile, name", GRID_RUNS, ids=[f"{p}:{n}" for p, n in GRID_RUNS])
def test_what_the_grid_says_is_what_trains(monkeypatch, tmp_path, profile, name):
    config = RunConfig(**grid.run(name).params(profile))
    rec = recorded_run(monkeypatch, tmp_path, config)
    final = rec.of("train")[-1]
    for check in dict.fromkeys(ARRIVES.values()):  # each check once
        check(config, rec, final)
    if profile != "smoke":  # (the smoke profile shortens the warm-up and the data)
        check_papers_settings(grid.run(name), rec)


# ---- ... and what the papers say ----------------------------------------------------------------------------
# What reaches vae_core.train for each protocol, in the default and paper profiles (the smoke profile shortens
# the warm-up and the data), from the papers, or where they are silent from the released code.

KINGMA = dict(optimizer="adagrad", lr_choices=[0.01, 0.02, 0.1], weight_prior=True, warmup_steps=101,  # wzoptim.py
              pixel_scale=256, batch_size=100, activation="tanh", init="normal", init_std=0.01, n_samples=1)
BURDA = dict(optimizer="adam", lr=1e-3, adam_eps=1e-4 / 20, batch_size=20, hidden=[200, 200], latent_dim=50,
             init="glorot", lr_schedule="burda", weight_prior=False, warmup_steps=0, pixel_scale=255,
             output_bias="data_mean")  # yburda/iwae datasets.py get_train_bias_np; 400 images held out
# anglepy 55f25be (2014-04-28), wzoptim.py: `step_va` trains models/MLEM.py's DLVM (log-variance layer and output
# biases from zero), `step_wakesleep` models/MLBN_Inverse.py as q (log-variance 0.1 W h + b from zero); both draw
# minibatches with np.random.randint. What trains, per algorithm:
RELEASED = dict(recognition={"aevb": "anglepy-va", "wake_sleep": "anglepy"}, minibatches="with_replacement")
PAPER_TEXT = dict(recognition="paper", minibatches="epochs")
PAPERS = {
    ("mnist", "report"): dict(optimizer="adam", lr=1e-3, adam_eps=1e-8, batch_size=100, hidden=[500], pixel_scale=255,
                              binarize="none", weight_prior=False, warmup_steps=0, lr_schedule="constant"),
    ("mnist", "kingma"): dict(KINGMA, hidden=[500], binarize="none", train_size=50_000, **RELEASED),
    ("frey", "kingma"): dict(KINGMA, hidden=[200], binarize="none", **RELEASED),
    ("mnist", "kingma-paper"): dict(KINGMA, hidden=[500], binarize="none", train_size=50_000, **PAPER_TEXT),
    ("mnist", "kingma-paper-lr0.02"): dict({k: v for k, v in KINGMA.items() if k != "lr_choices"}, lr=0.02,
                                           hidden=[500], binarize="none", train_size=50_000, **PAPER_TEXT),
    ("frey", "kingma-paper"): dict(KINGMA, hidden=[200], binarize="none", **PAPER_TEXT),
    ("mnist", "kingma-nowarmup-60k"): dict(KINGMA, hidden=[500], warmup_steps=0, train_size=60_000, **RELEASED),
    ("mnist", "kingma-60k"): dict(KINGMA, hidden=[500], train_size=60_000, **RELEASED),
    ("mnist", "kingma-trial5e5"): dict(KINGMA, hidden=[500], train_size=50_000, lr_trial_samples=500_000,
                                       **RELEASED),
    ("mnist", "kingma-lr0.02"): dict({k: v for k, v in KINGMA.items() if k != "lr_choices"}, lr=0.02, hidden=[500],
                                     train_size=50_000, **RELEASED),
    ("mnist", "kingma-binary"): dict(KINGMA, hidden=[500], binarize="dynamic", train_size=50_000, **RELEASED),
    **{("mnist", p): dict({k: v for k, v in KINGMA.items() if k != "lr_choices"}, lr=0.02, hidden=[100], latent_dim=3,
                          train_size=n) for p, n in (("fig3n1000", 1000), ("fig3n50000", 50_000),
                                                      ("fig3n1000-online", 1000))},
    ("mnist", "burda"): dict(BURDA, binarize="dynamic", train_size=59_600),
    ("mnist", "burda-eps1e-4"): dict(BURDA, binarize="dynamic", adam_eps=1e-4, train_size=59_600),
    ("mnist", "burda-adam-iwae"): dict(BURDA, binarize="dynamic", optimizer="adam_iwae", adam_eps=1e-8,
                                       train_size=59_600),
    ("mnist", "burda-zero-bias"): dict(BURDA, binarize="dynamic", output_bias="init", train_size=59_600),
    ("mnist", "burda-static"): dict(BURDA, binarize="static", train_size=50_000),
    ("mnist", "fig3n1000-encoder"): dict({k: v for k, v in KINGMA.items() if k != "lr_choices"}, lr=0.02,
                                         hidden=[100], latent_dim=3, train_size=1000),
}


def what_trained(final, loads):
    model = final["model"].config
    optimizer = final["optimizer"] if isinstance(final["optimizer"], str) else "adam_iwae"  # their Adam, built
    return {"optimizer": optimizer, "lr": final["lr"], "adam_eps": final["adam_eps"],
            "weight_prior": final["weight_prior"], "warmup_steps": final["warmup_steps"],
            "lr_schedule": final["lr_schedule"], "batch_size": final["batch_size"], "hidden": model["hidden"],
            "latent_dim": model["z_dim"], "activation": model["activation"], "init": model["init"],
            "init_std": model["init_std"], "n_samples": final.get("n_samples"), "train_size": len(final["train_x"]),
            "binarize": loads[0]["binarize"], "pixel_scale": loads[0]["pixel_scale"], "recognition": model["recognition"],
            "minibatches": final["minibatches"],
            "output_bias": "data_mean" if model["likelihood"] == "bernoulli" and torch.allclose(
                final["model"].decoder[-1].bias.double(), logit_of_mean(final["train_x"]), atol=1e-5) else "init"}


def logit_of_mean(x):
    mean = x.double().mean(0).clamp(0.001, 0.999)
    return torch.log(mean / (1 - mean))


def check_papers_settings(run, rec):
    trained = what_trained(rec.of("train")[-1], rec.of("load"))
    # the protocol as this test states it, with what its sweep adds (a sweep's params, aevb/grid.py)
    protocol = PAPERS[run.dataset, run.protocol]
    paper = dict(protocol, **{k: v for k, v in run.extra if k in protocol})
    if "lr_choices" in paper:
        assert [c["lr"] for c in trials(rec)] == paper["lr_choices"], run.name
    if run.algorithm == "mcem" and run.protocol != "fig3n1000-online":  # batch MCEM, App. E's 5 M-steps
        # (wzoptim.py: step_batch_mcem; its M-step's optimizer is not released, so no warm-up)
        paper = dict(paper, batch_size=paper["train_size"], warmup_steps=0)
        assert rec.of("train")[-1]["updates"] == 5
    if run.algorithm == "mcem":
        paper = dict(paper, n_samples=None)
    if run.algorithm == "iwae":
        paper = dict(paper, n_samples=50)
    if isinstance(paper.get("recognition"), dict):  # each algorithm's own model
        paper = dict(paper, recognition=paper["recognition"][run.algorithm])
    wrong = {k: (trained[k], v) for k, v in paper.items() if k in trained and trained[k] != v}
    assert not wrong, (run.name, wrong)


def test_every_protocol_has_its_papers_settings_and_the_paper_profile_their_budgets():
    assert set(PAPERS) == set(grid.PROTOCOLS)
    for run in grid.runs(profile="paper", protocol="kingma"):  # 10^8 samples (Kingma & Welling's Figure 2)
        assert run.params("paper")["samples"] == 10 ** 8, run.name
    for run in grid.runs(profile="paper", protocol=list(grid.BURDA_IMAGES)):  # 3280 passes (Burda et al.)
        assert run.params("paper")["samples"] == 3280 * PAPERS[run.dataset, run.protocol]["train_size"], run.name


# ---- vae_core.train: the optimizer it builds and the step size of every step -------------------------------

def recorded_training(monkeypatch, steps, points=20, **kwargs):
    """Train a small model for `steps` minibatches of 20 on `points` points; the optimizer train built and the
    learning rate of each step, read as the step is taken."""
    built, rates = [], []
    make = vc.make_optimizer

    def recording(*args, **kw):
        opt = make(*args, **kw)
        opt.register_step_pre_hook(lambda o, *_: rates.append([g["lr"] for g in o.param_groups]))
        built.append((opt, args, kw))
        return opt
    monkeypatch.setattr(vc.training, "make_optimizer", recording)
    from conftest import small_model
    x = torch.bernoulli(torch.full((points, 12), 0.3))
    vc.train(small_model(), x, "aevb", samples=20 * steps, batch_size=20, device="cpu", **kwargs)
    [(opt, _, _)] = built
    assert all(len(set(r)) == 1 for r in rates)  # every parameter group at the same rate
    return opt, [r[0] for r in rates]


def test_burdas_schedule_steps_at_every_stage_by_the_papers_numbers(monkeypatch):
    """Burda et al., Sec. 5.1: "for i = 0..7, we trained for 3^i passes over the data with learning rate
    0.001 * 10^(-i/7)". With two steps a pass: stage i's 2 * 3^i steps at exactly that rate (stages 0..3 here)."""
    passes = sum(3 ** i for i in range(4))
    opt, rates = recorded_training(monkeypatch, 2 * passes, points=40, optimizer="adam", lr=1e-3, lr_schedule="burda",
                                   adam_eps=1e-4 / 20)
    expected = [0.001 * 10 ** (-i / 7) for i in range(4) for _ in range(2 * 3 ** i)]
    assert rates == pytest.approx(expected, rel=1e-12, abs=0)
    assert [vc.burda_stage(e) for e in (0, 1, 3, 4, 12, 13, 39, 40, 120, 121, 363, 364, 1092, 1093, 3279, 10 ** 6)] == \
        [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7]  # every stage's first and last pass, and after the end
    assert sum(3 ** i for i in range(8)) == 3280 == grid.BURDA_PASSES["paper"]


def test_a_constant_schedule_keeps_its_rate(monkeypatch):
    _, rates = recorded_training(monkeypatch, 5, optimizer="adam", lr=3e-3)
    assert rates == [3e-3] * 5


def test_the_adagrad_warm_up_steps_at_rate_zero_then_at_the_full_rate(monkeypatch):
    """Kingma & Welling's Adagrad (anglepy, wzoptim.py): the first minibatches only accumulate squared gradients
    (`if nsteps[0] > warmup` with warmup = 100, counted from 0: 101 of them), then steps at the chosen rate."""
    opt, rates = recorded_training(monkeypatch, 105, optimizer="adagrad", lr=0.02, warmup_steps=101)
    assert rates == [0.0] * 101 + [0.02] * 4
    assert grid.ADAGRAD["warmup_steps"] == 101
    assert all(opt.state[p]["sum"].abs().sum() > 0 for g in opt.param_groups for p in g["params"])  # fed in the warm-up


@pytest.mark.parametrize("name, lr, eps", [("adam", 1e-3, 1e-4 / 20), ("adam", 1e-3, 1e-8), ("adagrad", 0.02, None)])
def test_make_optimizer_builds_the_papers_optimizer(name, lr, eps):
    """Adam with beta = (0.9, 0.999) and the given eps (Burda et al., Sec. 5.1; the report's torch defaults), no
    amsgrad, no decoupled decay; Adagrad with no decay of its rate and an accumulator from 0 (wzoptim.py: gw_ss
    starts at zeros); the weight decay on the weight matrices alone, the biases free."""
    from conftest import small_model
    model = small_model()
    opt = vc.make_optimizer(model.named_parameters(), name, lr, 0.25, torch.device("cpu"),
                            **({"adam_eps": eps} if eps else {}))
    assert type(opt) is {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[name]
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay == {n: (0.25 if n.endswith("weight") else 0.0) for n, _ in model.named_parameters()}
    for group in opt.param_groups:
        assert group["lr"] == lr
        if name == "adam":
            assert group["betas"] == (0.9, 0.999) and group["eps"] == eps and not group["amsgrad"]
        else:
            assert group["lr_decay"] == 0 and group["initial_accumulator_value"] == 0


def test_burdas_eps_on_the_sum_is_the_protocols_eps_on_the_mean():
    """iwae.py ascends the minibatch's summed bound with Adam eps = 1e-4; Adam is invariant to the gradient's
    scale except through eps, so make_optimizer's Adam on the mean's gradient with the protocol's eps (1e-4 / 20,
    minibatch 20) takes the same steps, and with 1e-4 on the mean (burda-eps1e-4) it does not."""
    from conftest import small_model
    x = torch.bernoulli(torch.rand(grid.PROTOCOLS["mnist", "burda"]["batch_size"], 12))
    models = {}
    for case in ("theirs", "burda", "burda-eps1e-4"):
        torch.manual_seed(0)
        model = small_model()
        if case == "theirs":
            opt, reduce = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-4), torch.sum
        else:
            protocol = grid.PROTOCOLS["mnist", case]
            opt = vc.make_optimizer(model.named_parameters(), protocol["optimizer"], protocol["lr"], 0.0,
                                    torch.device("cpu"), protocol["adam_eps"])
            reduce = torch.mean
        for _ in range(30):
            loss = -reduce(model.elbo(x)[0])
            opt.zero_grad()
            loss.backward()
            opt.step()
        models[case] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(models["theirs"], models["burda"], atol=1e-6)
    assert (models["theirs"] - models["burda-eps1e-4"]).abs().max() > 1e-4
