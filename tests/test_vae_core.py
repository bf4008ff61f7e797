"""vae_core: the maths against analytic values, each algorithm's step, and the training loop."""
import math
import os
import subprocess
import sys

import pytest
import torch

import vae_core as vc
from aevb.runs import Checkpoint
from conftest import ROOT, changed_parameters, exact_log_px, small_model, without_wall_time


# ---- the model and its objectives ---------------------------------------------------------------

def test_analytic_kl_matches_monte_carlo():
    z_loc, z_logvar = torch.randn(4, 3), torch.randn(4, 3)
    model = small_model(x_dim=5, z_dim=3)
    model.encode = lambda x: (z_loc, z_logvar)
    _, _, kl = model.elbo(torch.zeros(4, 5))
    z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn(400_000, 4, 3)
    log_ratio = vc.log_normal(z, z_loc, z_logvar) - vc.log_standard_normal(z)
    stderr = log_ratio.std(0) / math.sqrt(len(z))
    assert torch.all((log_ratio.mean(0) - kl).abs() < 4 * stderr + 1e-3), (log_ratio.mean(0), kl)


def test_gaussian_decoder_log_likelihood_matches_torch_distributions():
    model = small_model("gaussian")
    x, z = torch.rand(7, 12), torch.randn(7, 2)
    x_loc, x_logvar = model.decode(z)
    assert torch.all((x_loc > 0) & (x_loc < 1))  # the mean goes through a sigmoid
    expected = torch.distributions.Normal(x_loc, torch.exp(0.5 * x_logvar)).log_prob(x).sum(-1)
    assert torch.allclose(model.log_px_given_z(x, (x_loc, x_logvar)), expected, atol=1e-5)


def test_bernoulli_decoder_log_likelihood_matches_torch_distributions():
    model = small_model()
    x, z = torch.bernoulli(torch.full((7, 12), 0.4)), torch.randn(7, 2)
    logits = model.decode(z)
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(model.log_px_given_z(x, logits), expected, atol=1e-5)


def test_bernoulli_draws_have_the_right_law():
    probs = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.9, 1.0]).expand(200_000, 6)
    x = vc.bernoulli(probs)
    assert set(x.unique().tolist()) == {0.0, 1.0} and x.dtype == probs.dtype
    stderr = (probs[0] * (1 - probs[0]) / len(x)).sqrt()
    assert torch.all((x.mean(0) - probs[0]).abs() <= 4 * stderr + 1e-9), x.mean(0)
    assert x[:, 0].sum() == 0 and x[:, -1].sum() == len(x)  # p = 0 and p = 1 are exact


def test_sleep_phase_dreams_are_sampled_not_means():
    """The sleep phase's dreams x ~ p(x|z) are Bernoulli draws: with every pixel's mean 0.3, the encoder is fed
    0s and 1s whose mean is 0.3 (means would be 0.3 everywhere, thresholded means 0 everywhere)."""
    model = small_model()
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.fill_(math.log(0.3 / 0.7))
    fed = []
    encode = model.encode
    model.encode = lambda x: (fed.append(x.detach().clone()), encode(x))[1]
    vc.wake_sleep_losses(model, torch.bernoulli(torch.full((400, 12), 0.3)), n_samples=5)
    data, dreams = fed
    assert len(dreams) == 400 * 5 and set(dreams.unique().tolist()) == {0.0, 1.0}
    assert dreams.mean().item() == pytest.approx(0.3, abs=0.01)  # sd of this mean: 0.003


# ---- each algorithm's step updates what it should -----------------------------------------------

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_wake_updates_only_decoder_and_sleep_only_encoder(likelihood):
    model = small_model(likelihood)
    x = torch.rand(32, 12) if likelihood == "gaussian" else torch.bernoulli(torch.full((32, 12), 0.3))
    encoder = {n for n, _ in model.named_parameters() if n.startswith("encoder.")}
    decoder = {n for n, _ in model.named_parameters() if n.startswith("decoder.")}
    for phase, expected in (("wake", decoder), ("sleep", encoder)):
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
        model.zero_grad(set_to_none=True)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        wake_loss, sleep_loss, _, _ = vc.wake_sleep_losses(model, x)
        (wake_loss if phase == "wake" else sleep_loss).backward()
        opt.step()
        assert changed_parameters(before, model) == expected, phase


@pytest.mark.parametrize("algorithm, learns", [("aevb", "both"), ("wake_sleep", "both"), ("mcem", "decoder"),
                                               ("iwae", "both")])
def test_each_step_learns_its_parameters_and_returns_its_sums(algorithm, learns):
    model = small_model()
    x = torch.bernoulli(torch.full((50, 12), 0.3))
    step = vc.ALGORITHMS[algorithm](model, len(x), **({} if algorithm == "mcem" else {"n_samples": 5}))
    opt = torch.optim.Adam([p for _, p in step.named_parameters()], lr=0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sums = step(opt, x[:10], torch.arange(10))
    assert sums and all(v.shape == () and torch.isfinite(v) and not v.requires_grad for v in sums.values())
    assert set(sums) == {"aevb": {"log p(x|z)", "KL"}, "wake_sleep": {"log p(x|z)", "KL"}, "iwae": {"k-sample bound"},
                         "mcem": {"log p(x|z)", "-log p(z)"}}[algorithm]
    decoder = {n for n in before if n.startswith("decoder.")}
    assert changed_parameters(before, model) == (set(before) if learns == "both" else decoder)
    assert step.has_bound == (algorithm != "mcem")


# ---- the training loop --------------------------------------------------------------------------

def test_aevb_test_elbo_rises_on_mnist(mnist_subset):
    x, xt = mnist_subset
    torch.manual_seed(1)
    model = vc.VAE(784, 10, hidden=(200,))
    start = vc.evaluate(model, xt)["elbo"]
    history = vc.train(model, x, "aevb", epochs=8, lr=3e-3, seed=1, test_x=xt, eval_at=[3000, 12_000])
    end = history[-1]["test_elbo"]
    assert start < -500 and end > start + 250, (start, end)
    assert [row["samples"] for row in history] == [3000, 12_000, 24_000] and history[-1]["test_kl"] > 1
    assert [row["test_elbo"] for row in history] == sorted(row["test_elbo"] for row in history)  # it rises


@pytest.mark.parametrize("algorithm", vc.ALGORITHMS)
def test_same_seed_gives_same_numbers_on_cpu(mnist_subset, algorithm):
    x, xt = mnist_subset
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # the initialization is drawn when the model is built
        model = vc.VAE(784, 5, hidden=(50,))
        history = vc.train(model, x[:1000], algorithm, samples=3000, seed=7, test_x=xt[:200],
                           eval_at=[1000], device="cpu")
        runs.append((history, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert without_wall_time(h1) == without_wall_time(h2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_eval_fn_leaves_training_unchanged():
    data = torch.bernoulli(torch.full((300, 12), 0.3))
    runs = []
    for eval_fn in (None, lambda m, state: {"noise": torch.randn(1000).mean()}):  # it draws random numbers
        torch.manual_seed(0)
        model = small_model()
        history = vc.train(model, data, "aevb", samples=900, eval_at=[300], eval_fn=eval_fn, device="cpu")
        runs.append((history, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [r["train_elbo"] for r in h1] == [r["train_elbo"] for r in h2]
    assert "noise" in h2[0] and "noise" not in h1[0] and isinstance(h2[0]["noise"], float)


@pytest.mark.parametrize("algorithm", vc.ALGORITHMS)
def test_checkpoint_resume_matches_uninterrupted_run(tmp_path, algorithm):
    torch.manual_seed(4)
    x = torch.bernoulli(torch.rand(5, 12).repeat(40, 1))  # 200 points
    # 4 steps per epoch, a checkpoint after 12; the warm-up's 14 steps go on after the resume
    # Burda's schedule changes the step size at the ends of epochs 1 and 4, on either side of the resume
    kwargs = dict(seed=5, eval_at=[300, 700], batch_size=50, lr=1e-2, device="cpu",
                  test_x=x[:20] if algorithm != "mcem" else None, warmup_steps=14, lr_schedule="burda")
    if algorithm == "mcem":  # its logged log p(x) draws from the RNG too
        from aevb.estimators import log_likelihood_hmc
        kwargs["eval_fn"] = lambda m, state: {"train_log_px": log_likelihood_hmc(m, x[:10], k=100, n_burnin=10,
                                                                          n_hmc_samples=5).mean()}
    torch.manual_seed(0)
    reference = small_model()
    expected = vc.train(reference, x, algorithm, samples=1200, **kwargs)
    # the same run stopped after 3 epochs (its checkpoint at the epoch end), then resumed
    ckpt = tmp_path / "checkpoint.pt"
    torch.manual_seed(0)
    vc.train(small_model(), x, algorithm, samples=650, checkpoint=Checkpoint(ckpt, every=200),
             **{**kwargs, "eval_at": [300]})
    state = torch.load(ckpt, weights_only=False)
    assert state["samples_seen"] == 600
    if algorithm == "mcem":  # its chains are state too
        chains = state["step"]["chains"]
        assert chains["z"].shape == (200, 2) and chains["step_size"].shape == (200,)
        assert not torch.all(chains["step_size"] == vc.HMC_INIT_STEP_SIZE)  # adapted, and saved
    resumed_model = small_model()
    resumed = vc.train(resumed_model, x, algorithm, samples=1200, checkpoint=Checkpoint(ckpt), **kwargs)
    assert without_wall_time(resumed) == without_wall_time(expected) and len(expected) == 3
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(),
                                                  reference.state_dict().values()))


def test_iwae_bound_is_the_elbo_at_k1_and_tightens_towards_log_px():
    torch.manual_seed(3)
    model = small_model()
    x = torch.bernoulli(torch.full((6, 12), 0.3))
    exact = exact_log_px(model, x)
    def mean_bound(k, reps, chunks=1):  # the bound's mean over reps independent draws, reps / chunks at a time
        per_chunk = reps // chunks
        return torch.cat([vc.iwae_bound(model, x.repeat(per_chunk, 1), k).view(per_chunk, len(x))
                          for _ in range(chunks)]).mean(0)
    with torch.no_grad():
        elbo = model.elbo(x, n_samples=20_000)[0]
        k1 = mean_bound(1, 20_000)
        bounds = {5: mean_bound(5, 400), 50: mean_bound(50, 400), 2000: mean_bound(2000, 400, chunks=8)}
    assert (k1 - elbo).abs().max() < 0.05  # k = 1: one importance weight, the ELBO in expectation
    assert torch.all(bounds[5] > elbo + 0.01) and torch.all(bounds[50] > bounds[5])  # Burda et al., Theorem 1
    assert torch.all(bounds[2000] > bounds[50]) and torch.all(bounds[2000] <= exact.float() + 0.02)  # below log p(x)
    assert torch.all(exact.float() - bounds[2000] < 0.5 * (exact.float() - elbo))  # ... and closing in on it


def test_burda_schedule_is_3_to_the_i_passes_at_a_tenth_of_the_rate_every_7_stages():
    stages = [vc.burda_stage(e) for e in range(3300)]
    assert [stages.count(i) for i in range(8)] == [3 ** i for i in range(7)] + [3 ** 7 + 3300 - 3280]
    assert stages == sorted(stages) and vc.burda_stage(1092) == 6 and vc.burda_stage(1093) == 7
    # in training: the first pass at lr, then 10^(-1/7) of it; a constant schedule matches for one pass
    x = torch.bernoulli(torch.full((100, 12), 0.3))
    models = {}
    for schedule, epochs in (("constant", 1), ("burda", 1), ("constant", 2), ("burda", 2)):
        torch.manual_seed(0)
        models[schedule, epochs] = small_model()
        vc.train(models[schedule, epochs], x, "aevb", epochs=epochs, batch_size=20, lr=1e-2, seed=1,
                 lr_schedule=schedule, adam_eps=1e-4)
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert same(models["constant", 1], models["burda", 1]) and not same(models["constant", 2], models["burda", 2])
    with pytest.raises(ValueError, match="lr_schedule"):
        vc.train(small_model(), x, "aevb", epochs=1, lr_schedule="cosine")


def test_glorot_init_is_uniform_within_its_bound_with_zero_biases():
    model = vc.VAE(784, 50, [200, 200], init="glorot")
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            bound = math.sqrt(6 / sum(p.shape))
            assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound, name
            assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05), name
    with pytest.raises(ValueError, match="init"):
        vc.VAE(784, 50, init="he")


def test_warmup_steps_only_feed_the_optimizer_then_adagrad_starts_below_its_full_step():
    x = torch.bernoulli(torch.full((400, 12), 0.3))
    def trained(samples, warmup_steps):
        torch.manual_seed(0)
        model = small_model()
        start = [p.detach().clone() for p in model.parameters()]
        vc.train(model, x, "aevb", samples=samples, optimizer="adagrad", lr=0.1, warmup_steps=warmup_steps,
                      eval_at=[100])
        return torch.cat([(p.detach() - p0).abs().flatten() for p, p0 in zip(model.parameters(), start)])
    assert trained(300, warmup_steps=3).max() == 0  # three warm-up steps: nothing moved
    # plain Adagrad's first step moves every parameter by lr * sign(g); after a warm-up of 3 steps the
    # accumulated squares make the first update about half that (g4 / sqrt(g1^2 + ... + g4^2))
    assert trained(100, warmup_steps=0).median() == pytest.approx(0.1, rel=1e-3)
    assert 0.02 < trained(400, warmup_steps=3).median() < 0.08
    with pytest.raises(ValueError, match="warmup_steps"):
        vc.train(small_model(), x, "aevb", samples=100, warmup_steps=-1)


class DivergingVAE(vc.VAE):
    """Its decoder starts returning NaN after a number of calls, as a diverging run would."""
    calls_before_nan = 40

    def decode(self, z):
        self.calls_before_nan -= 1
        out = super().decode(z)
        return out * float("nan") if self.calls_before_nan < 0 else out


def test_divergence_stops_with_when_and_what_and_keeps_the_last_good_checkpoint(tmp_path):
    x = torch.bernoulli(torch.full((500, 12), 0.3))
    ckpt = tmp_path / "checkpoint.pt"
    model = DivergingVAE(12, 2, hidden=(8,))
    with pytest.raises(vc.TrainingDiverged, match=r"between [\d,]+ and [\d,]+ training samples: non-finite log p\(x\|z\)"):
        vc.train(model, x, "aevb", samples=20_000, eval_at=[1000], checkpoint=Checkpoint(ckpt, every=500))
    state = torch.load(ckpt, weights_only=False)
    assert 0 < state["samples_seen"] <= 40 * 100  # the last checkpoint before the NaNs
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_in_parameters_stops_training_and_says_when():
    model = small_model()
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = float("nan")
    with pytest.raises(vc.TrainingDiverged, match=r"between 0 and 200 training samples.*decoder.0.weight"):
        vc.train(model, torch.bernoulli(torch.full((400, 12), 0.3)), "aevb", samples=400,
                      eval_at=[200])


def test_bad_arguments_are_refused_early():
    x = torch.rand(100, 12)
    for kwargs, message in [(dict(algorithm="sleep_wake", samples=100), "algorithm"),
                            (dict(samples=100, epochs=1), "exactly one"),
                            (dict(samples=100, optimizer="sgd"), "optimizer"),
                            (dict(samples=1000, batch_size=500), "batch_size"),
                            (dict(algorithm="mcem", samples=100, n_samples=5), "mcem takes the options "
                                                                               "hmc_transitions, updates, step_size_rule; not n_samples"),
                            (dict(algorithm="mcem", samples=100, hmc_transitions=0), "hmc_transitions=0 must be"),
                            (dict(algorithm="mcem", samples=100, updates=0), "updates=0 must be an integer >= 1"),
                            (dict(algorithm="aevb", samples=100, updates=5), "aevb takes the options n_samples")]:
        model = small_model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match=message):
            vc.train(model, x, **kwargs)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained
    with pytest.raises(ValueError, match="likelihood"):
        vc.VAE(12, 2, likelihood="poisson")


DENORMALS_AFTER_PARALLEL_WORK = """
import sys, torch
if sys.argv[1] == "vae_core":
    import vae_core
torch.ones(1 << 22).mul_(2)  # starts OpenMP's worker threads
torch.set_flush_denormal(True)  # what train() does for its own thread
squares = torch.full((1 << 20,), 1e-20) ** 2  # 1e-40: denormal unless flushed; split across the threads
print(int((squares != 0).sum()))
"""


def test_denormals_are_flushed_in_every_thread_once_vae_core_is_imported():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    def denormals(first_import):
        out = subprocess.run([sys.executable, "-c", DENORMALS_AFTER_PARALLEL_WORK, first_import],
                             capture_output=True, text=True, env=env, check=True, cwd=ROOT)
        return int(out.stdout.split()[-1])
    if denormals("torch only") == 0:  # the worker thread flushed anyway (no FTZ mode, or one thread)
        pytest.skip("no denormals appear in OpenMP's worker threads here, so there is nothing to check")
    assert denormals("vae_core") == 0
