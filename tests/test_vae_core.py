"""The maths of vae_core against analytic values, and its loops on real MNIST."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import vae_core as vc


def small_model(likelihood="bernoulli", x_dim=12, z_dim=2):
    # A larger init than the paper's 0.01 so that q(z|x) and p(x|z) really depend on their inputs.
    return vc.VAE(x_dim, z_dim, hidden=(16,), likelihood=likelihood, init_std=0.5)


def test_analytic_kl_matches_monte_carlo():
    z_loc, z_logvar = torch.randn(4, 3), torch.randn(4, 3)
    model = small_model(x_dim=5, z_dim=3)
    model.encode = lambda x: (z_loc, z_logvar)
    _, _, kl = model.elbo(torch.zeros(4, 5))
    z = z_loc + torch.exp(0.5 * z_logvar) * torch.randn(400_000, 4, 3)
    log_ratio = vc.log_normal(z, z_loc, z_logvar) - vc.log_standard_normal(z)
    stderr = log_ratio.std(0) / math.sqrt(len(z))
    assert torch.all((log_ratio.mean(0) - kl).abs() < 4 * stderr + 1e-3), (log_ratio.mean(0), kl)


def test_kl_is_zero_when_q_equals_prior():
    model = small_model(x_dim=5, z_dim=3)
    model.encode = lambda x: (torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(model.elbo(torch.zeros(2, 5))[2], torch.zeros(2))


def test_elbo_below_importance_sampled_log_likelihood_and_k1_averages_to_elbo():
    model = small_model()
    x = torch.bernoulli(torch.full((8, 12), 0.3))
    elbo = model.elbo(x, n_samples=20_000)[0].detach()
    log_px = vc.log_likelihood(model, x, k=20_000)
    assert torch.all(elbo <= log_px.float() + 1e-3)
    assert (log_px.float() - elbo).mean() > 0.01  # a real gap, so the check above means something
    # With k = 1 the estimator is log p(x, z) - log q(z|x) for one z ~ q: its mean is the ELBO.
    reps = 20_000
    k1 = vc.log_likelihood(model, x.repeat(reps, 1), k=1).view(reps, len(x))
    stderr = k1.std(0) / math.sqrt(reps)
    assert torch.all((k1.mean(0) - elbo.double()).abs() < 4 * stderr + 0.02)


def exact_log_px(model, x, lim=7.0, n=601):
    """log p(x) by quadrature over a 2-D latent grid (the prior's mass outside +-7 is negligible)."""
    grid = torch.linspace(-lim, lim, n)
    z = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        log_joint = model.log_px_given_z(x[:, None, :], model.decode(z)[None]) + vc.log_standard_normal(z)
    return torch.logsumexp(log_joint.double(), dim=1) + 2 * math.log(grid[1] - grid[0])


def test_log_likelihood_matches_quadrature_whatever_the_chunking():
    model = small_model()
    data = torch.bernoulli(torch.rand(4, 12).repeat(500, 1))
    vc.train_aevb(model, data, epochs=20, lr=1e-2, progress="none")  # so that q is a fair proposal
    x = data[:30]
    exact = exact_log_px(model, x)
    whole = vc.log_likelihood(model, x, k=5000)
    chunked = vc.log_likelihood(model, x, k=5000, max_elements=500)  # 30 points x 1 draw per chunk
    assert whole.shape == chunked.shape == (30,)
    assert (whole - exact).abs().max() < 0.05
    assert (chunked - exact).abs().max() < 0.05


def test_reparameterized_gradient_matches_analytic_for_quadratic():
    # f(z) = sum(a z^2 + b z): E_q f = sum(a (mu^2 + sigma^2) + b mu), so
    # dE/dmu = 2 a mu + b and dE/dlogvar = a sigma^2.
    a, b = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.3, -2.0])
    mu = torch.tensor([0.2, -0.7, 1.1], requires_grad=True)
    logvar = torch.tensor([-0.5, 0.3, 0.0], requires_grad=True)
    eps = torch.randn(200_000, 3)
    z = mu + torch.exp(0.5 * logvar) * eps
    (a * z.pow(2) + b * z).sum(-1).mean().backward()
    assert torch.allclose(mu.grad, 2 * a * mu.detach() + b, atol=0.02)
    assert torch.allclose(logvar.grad, a * logvar.detach().exp(), atol=0.02)


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


def _changed(before, model):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


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
        assert _changed(before, model) == expected, phase


def test_sleep_phase_dreams_are_sampled_not_means():
    model = small_model()
    x = model.sample_x(torch.randn(500, 2))
    assert set(x.unique().tolist()) == {0.0, 1.0}


def test_bernoulli_draws_have_the_right_law():
    probs = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.9, 1.0]).expand(200_000, 6)
    x = vc.bernoulli(probs)
    assert set(x.unique().tolist()) == {0.0, 1.0} and x.dtype == probs.dtype
    stderr = (probs[0] * (1 - probs[0]) / len(x)).sqrt()
    assert torch.all((x.mean(0) - probs[0]).abs() <= 4 * stderr + 1e-9), x.mean(0)
    assert x[:, 0].sum() == 0 and x[:, -1].sum() == len(x)  # p = 0 and p = 1 are exact


def test_aevb_updates_both_networks():
    model = small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    vc.aevb_loss(model, torch.bernoulli(torch.full((32, 12), 0.3)))[0].backward()
    opt.step()
    assert _changed(before, model) == set(before)


# ---- on real MNIST ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_subset():
    x, _ = vc.load_mnist(None, "train")
    xt, _ = vc.load_mnist(None, "test")
    return x[:3000], xt[:1000]


def test_aevb_test_elbo_rises_on_mnist(mnist_subset):
    x, xt = mnist_subset
    torch.manual_seed(1)
    model = vc.VAE(784, 10, hidden=(200,))
    start = vc.evaluate(model, xt)["elbo"]
    history = vc.train_aevb(model, x, epochs=8, lr=3e-3, seed=1, test_x=xt, progress="none")
    end = history[-1]["test_elbo"]
    assert start < -500 and end > start + 250, (start, end)
    assert history[-1]["samples"] == 8 * 3000 and history[-1]["test_kl"] > 1
    assert [row["samples"] for row in history] == sorted(row["samples"] for row in history)


def test_wake_sleep_trains_and_stays_finite_on_mnist(mnist_subset):
    x, xt = mnist_subset
    torch.manual_seed(1)
    model = vc.VAE(784, 10, hidden=(200,))
    start = vc.evaluate(model, xt)["elbo"]
    history = vc.train_wake_sleep(model, x, epochs=8, lr=3e-3, seed=1, test_x=xt, progress="none")
    values = [v for row in history for k, v in row.items() if k != "samples"]
    assert all(math.isfinite(v) for v in values)
    assert history[-1]["test_elbo"] > start + 150


@pytest.mark.parametrize("algorithm", vc.ALGORITHMS)
def test_same_seed_gives_same_numbers_on_cpu(mnist_subset, algorithm):
    x, xt = mnist_subset
    runs = []
    for _ in range(2):
        torch.manual_seed(7)  # the initialization is drawn when the model is built
        model = vc.VAE(784, 5, hidden=(50,))
        history = vc.train(model, x[:1000], algorithm, samples=3000, seed=7, test_x=xt[:200],
                           eval_at=[1000], device="cpu", progress="none")
        runs.append((history, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert [{k: v for k, v in r.items() if k != "wall_time"} for r in h1] == \
           [{k: v for k, v in r.items() if k != "wall_time"} for r in h2]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_weight_prior_and_adagrad_train(mnist_subset):
    x, xt = mnist_subset
    model = vc.VAE(784, 5, hidden=(100,))
    history = vc.train_aevb(model, x, epochs=3, optimizer="adagrad", lr=0.02, weight_prior=True,
                            test_x=xt, eval_at=[300], progress="none")
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] > -550


DENORMALS_AFTER_PARALLEL_WORK = """
import os, sys, torch
sys.path.insert(0, os.getcwd())
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
                             capture_output=True, text=True, env=env, check=True, cwd=vc.PROJECT_DIR)
        return int(out.stdout.split()[-1])
    if denormals("torch only") == 0:  # the worker thread flushed anyway (no FTZ mode, or one thread)
        pytest.skip("no denormals appear in OpenMP's worker threads here, so there is nothing to check")
    assert denormals("vae_core") == 0


def test_choose_lr_picks_the_best_training_bound_from_the_same_start():
    x = torch.bernoulli(torch.full((1000, 12), 0.3))
    model = small_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    common = dict(batch_size=50, optimizer="adagrad", weight_prior=True, seed=3, device="cpu")
    best, scores = vc.choose_lr(model, x, "aevb", [1e-5, 0.05, 1e9], 2000, **common)
    assert best == 0.05 and scores[1e9] == -math.inf and scores[0.05] > scores[1e-5] > -math.inf
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # trials train copies
    # the score is exactly the training bound of that lr's run from this initialization
    history = vc.train(small_model_like(start), x, "aevb", samples=2000, lr=0.05, eval_at=[2000],
                       progress="none", **common)
    assert history[-1]["train_elbo"] == scores[0.05]
    with pytest.raises(vc.TrainingDiverged, match="every learning rate"):
        vc.choose_lr(model, x, "aevb", [1e9], 2000, **common)
    with pytest.raises(ValueError, match="MCEM"):
        vc.choose_lr(model, x, "mcem", [0.1], 2000)


def small_model_like(state):
    model = small_model()
    model.load_state_dict(state)
    return model


def test_nan_in_parameters_stops_training_and_says_when():
    model = small_model()
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = float("nan")
    with pytest.raises(vc.TrainingDiverged, match=r"between 0 and 200 training samples.*decoder.0.weight"):
        vc.train_aevb(model, torch.bernoulli(torch.full((400, 12), 0.3)), samples=400,
                      eval_at=[200], progress="none")


def test_bad_arguments_are_refused_early():
    x = torch.rand(100, 12)
    with pytest.raises(ValueError, match="algorithm"):
        vc.train(small_model(), x, "sleep_wake", samples=100)
    with pytest.raises(ValueError, match="exactly one"):
        vc.train(small_model(), x, samples=100, epochs=1)
    with pytest.raises(ValueError, match="optimizer"):
        vc.train(small_model(), x, samples=100, optimizer="sgd")
    with pytest.raises(ValueError, match="batch_size"):
        vc.train(small_model(), x, samples=1000, batch_size=500)
    with pytest.raises(ValueError, match="likelihood"):
        vc.VAE(12, 2, likelihood="poisson")


def test_select_device():
    assert vc.select_device("cpu") == torch.device("cpu")
    assert vc.select_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError, match="tpu"):
        vc.select_device("tpu")
    if not torch.cuda.is_available():
        assert vc.select_device("auto") != torch.device("cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            vc.select_device("cuda")


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path, mnist_subset):
    x, xt = mnist_subset
    x = x[:500]
    kwargs = dict(seed=3, test_x=xt[:100], eval_at=[700, 1800], batch_size=100, progress="none")
    torch.manual_seed(0)
    reference = vc.VAE(784, 4, hidden=(32,))
    expected = vc.train_aevb(reference, x, samples=3000, **kwargs)
    # The same run stopped after 3 epochs (its checkpoint at the epoch end), then resumed.
    ckpt = tmp_path / "checkpoint.pt"
    torch.manual_seed(0)
    vc.train_aevb(vc.VAE(784, 4, hidden=(32,)), x, samples=1600, checkpoint_path=ckpt,
                  checkpoint_every=500, **{**kwargs, "eval_at": [700]})
    assert ckpt.exists() and torch.load(ckpt, weights_only=False)["samples_seen"] == 1500
    resumed_model = vc.VAE(784, 4, hidden=(32,))
    resumed = vc.train_aevb(resumed_model, x, samples=3000, checkpoint_path=ckpt, **kwargs)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]
    assert strip(resumed) == strip(expected)
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(),
                                                  reference.state_dict().values()))


def test_save_and_load_run_round_trip(tmp_path):
    model = small_model()
    history = vc.train_aevb(model, torch.bernoulli(torch.full((200, 12), 0.3)), samples=400,
                            test_x=torch.bernoulli(torch.full((50, 12), 0.3)), eval_at=[200], progress="none")
    run_dir = tmp_path / "runs" / "toy"
    with pytest.raises(FileNotFoundError, match="no finished run"):
        vc.load_run(run_dir)
    metrics = vc.save_run(run_dir, {"seed": 0, "algorithm": "aevb"}, history, model)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "history.csv", "metrics.json", "model.pt"]
    run = vc.load_run(run_dir)
    assert run["metrics"] == json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert metrics["test_elbo"] == pytest.approx(history[-1]["test_elbo"])
    assert {"seed", "device", "torch_version", "wall_time", "train_recon", "test_kl"} <= set(metrics)
    assert [r["samples"] for r in run["history"]] == [200, 400]
    assert run["history"][-1]["test_elbo"] == pytest.approx(history[-1]["test_elbo"])
    x = torch.rand(3, 12)
    assert torch.equal(run["model"].encode(x)[0], model.eval().encode(x)[0])


def test_log_spaced_points():
    points = vc.log_spaced_points(3_000_000)
    assert points[0] == 10_000 and points[-1] == 3_000_000
    ratios = [b / a for a, b in zip(points, points[1:])]
    assert max(ratios) / min(ratios) < 1.01
