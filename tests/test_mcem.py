"""HMC, Monte Carlo EM and the encoder-free log-likelihood estimator (Kingma & Welling, App. D and E)."""
import math

import pytest
import torch

import vae_core as vc
from test_vae_core import exact_log_px, small_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # HMC makes many tiny autograd calls: on a busy machine one thread is several times faster than two.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian_target(z_loc, z_scale):
    return lambda z: vc.log_normal(z, z_loc, 2 * z_scale.log())


Z_LOC, Z_SCALE = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 1.0, 2.0])


def test_hmc_leaves_a_gaussian_invariant_with_per_chain_step_sizes():
    n = 4000
    z0 = Z_LOC + Z_SCALE * torch.randn(n, 3)
    # step sizes up to 0.9 against a smallest scale of 0.5: a large energy error that only the
    # Metropolis correction removes
    step_size = 0.2 + 0.7 * torch.rand(n)
    z, accept_prob, step_size_out = vc.hmc(gaussian_target(Z_LOC, Z_SCALE), z0, step_size, n_transitions=5)
    assert z.shape == (n, 3) and accept_prob.shape == step_size_out.shape == (n,)
    assert torch.equal(step_size_out, step_size)  # no adaptation unless asked
    assert (z != z0).any(-1).float().mean() > 0.95  # the chains really moved
    assert 0.5 < accept_prob.mean() < 0.99
    stderr_mean, stderr_var = Z_SCALE / math.sqrt(n), Z_SCALE ** 2 * math.sqrt(2 / (n - 1))
    assert torch.all((z.mean(0) - Z_LOC).abs() < 4 * stderr_mean), z.mean(0)
    assert torch.all((z.var(0) - Z_SCALE ** 2).abs() < 4 * stderr_var), z.var(0)


def test_hmc_adapts_step_sizes_to_about_90_percent_acceptance():
    target = gaussian_target(Z_LOC, Z_SCALE)
    z = Z_LOC + Z_SCALE * torch.randn(2000, 3)
    z, accept_prob, step_size = vc.hmc(target, z, 0.01, n_transitions=100, adapt=True)  # from far too small
    assert step_size.mean() > 0.2  # it grew: 0.01 accepts everything
    z, accept_prob, _ = vc.hmc(target, z, step_size, n_transitions=5)  # then fixed
    assert abs(accept_prob.mean() - 0.9) < 0.03, accept_prob.mean()
    # and from far too large: almost everything is rejected at first
    _, _, step_size = vc.hmc(target, z, 5.0, n_transitions=40, adapt=True)
    _, accept_prob, _ = vc.hmc(target, z, step_size, n_transitions=5)
    assert abs(accept_prob.mean() - 0.9) < 0.03, accept_prob.mean()


def test_hmc_runs_under_no_grad_and_takes_batched_chains():
    target = gaussian_target(Z_LOC, Z_SCALE)
    with torch.no_grad():
        z, accept_prob, step_size = vc.hmc(target, torch.randn(4, 5, 3), torch.full((4, 5), 0.3))
    assert z.shape == (4, 5, 3) and accept_prob.shape == step_size.shape == (4, 5)


def test_hmc_log_likelihood_matches_quadrature_whatever_the_chunking():
    torch.manual_seed(1)
    model = small_model()
    # points the model explains well and points it does not (broad, skewed posteriors)
    x = torch.cat([model.sample_x(torch.randn(15, 2)), torch.bernoulli(torch.full((15, 12), 0.3))])
    exact = exact_log_px(model, x, n=301)  # 301 vs 601 grid points: 2e-5 nats apart here
    whole = vc.log_likelihood_hmc(model, x, k=5000)
    chunked = vc.log_likelihood_hmc(model, x, k=5000, max_elements=800)  # 2 chunks of points, 4 draws at a time
    assert whole.dtype == torch.float64 and whole.shape == chunked.shape == (30,)
    assert (whole - exact).abs().max() < 0.05, (whole - exact).abs().max()
    assert (chunked - exact).abs().max() < 0.05, (chunked - exact).abs().max()
    assert torch.equal(vc.log_likelihood_hmc(model, x[:5], k=500, n_burnin=30),
                       vc.log_likelihood_hmc(model, x[:5], k=500, n_burnin=30))  # its own seeded RNG


def test_hmc_log_likelihood_from_given_chain_states():
    torch.manual_seed(2)
    model = small_model()
    z_true = torch.randn(10, 2)
    x = model.sample_x(z_true)
    exact = exact_log_px(model, x, n=301)
    est = vc.log_likelihood_hmc(model, x, k=3000, n_burnin=10, z_init=z_true)  # a posterior draw each
    assert (est - exact).abs().max() < 0.05


def _changed(before, model):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_mcem_raises_log_likelihood_and_updates_only_the_decoder():
    torch.manual_seed(3)
    data = torch.bernoulli(torch.rand(4, 12)).repeat(100, 1)  # 4 prototypes: the best log p(x) is log 1/4
    x_eval = data[:40]
    model = small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = exact_log_px(model, x_eval, n=301).mean()
    log_px_hmc = lambda m: {"train_log_px": vc.log_likelihood_hmc(m, x_eval, k=1000).mean()}
    history = vc.train_mcem(model, data, epochs=20, lr=3e-2, batch_size=50, eval_at=[400], eval_fn=log_px_hmc,
                            seed=3, device="cpu", progress="none")
    end = exact_log_px(model, x_eval, n=301).mean()
    assert start < -9 and end > start + 5, (start, end)
    assert history[-1]["train_log_px"] > history[0]["train_log_px"] + 3
    assert abs(history[-1]["train_log_px"] - end) < 0.1  # the logged estimate is the right number
    assert _changed(before, model) == {n for n in before if n.startswith("decoder.")}
    assert "train_elbo" not in history[-1]  # an unused encoder has no meaningful ELBO
    assert 0.8 < history[-1]["hmc_accept_prob"] < 0.97 and history[-1]["hmc_step_size"] > 0


def test_eval_fn_leaves_aevb_training_unchanged():
    data = torch.bernoulli(torch.full((300, 12), 0.3))
    runs = []
    for eval_fn in (None, lambda m: {"noise": torch.randn(1000).mean()}):  # it draws random numbers
        torch.manual_seed(0)
        model = small_model()
        history = vc.train_aevb(model, data, samples=900, eval_at=[300], eval_fn=eval_fn, device="cpu",
                                progress="none")
        runs.append((history, model.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [r["train_elbo"] for r in h1] == [r["train_elbo"] for r in h2]
    assert "noise" in h2[0] and "noise" not in h1[0] and isinstance(h2[0]["noise"], float)


def test_mcem_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    torch.manual_seed(4)
    x = torch.bernoulli(torch.rand(5, 12).repeat(40, 1))  # 200 points
    x_eval = x[:10]
    log_px_hmc = lambda m: {"train_log_px": vc.log_likelihood_hmc(m, x_eval, k=100, n_burnin=10,
                                                                  n_hmc_samples=5).mean()}
    kwargs = dict(seed=5, eval_at=[300, 700], batch_size=50, lr=1e-2, eval_fn=log_px_hmc, device="cpu",
                  progress="none")
    torch.manual_seed(0)
    reference = small_model()
    expected = vc.train_mcem(reference, x, samples=1200, **kwargs)
    # the same run stopped after 3 epochs (its checkpoint at the epoch end), then resumed
    ckpt = tmp_path / "checkpoint.pt"
    torch.manual_seed(0)
    vc.train_mcem(small_model(), x, samples=650, checkpoint_path=ckpt, checkpoint_every=200,
                  **{**kwargs, "eval_at": [300]})
    state = torch.load(ckpt, weights_only=False)
    assert state["samples_seen"] == 600
    assert state["chains"]["z"].shape == (200, 2) and state["chains"]["step_size"].shape == (200,)
    assert not torch.all(state["chains"]["step_size"] == vc.HMC_INIT_STEP_SIZE)  # adapted, and saved
    resumed_model = small_model()
    resumed = vc.train_mcem(resumed_model, x, samples=1200, checkpoint_path=ckpt, **kwargs)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]
    assert strip(resumed) == strip(expected) and len(expected) == 3
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(),
                                                  reference.state_dict().values()))


def test_bad_arguments_are_refused():
    x = torch.rand(100, 12)
    with pytest.raises(ValueError, match="algorithm"):
        vc.train(small_model(), x, "mc_em", samples=100)
    with pytest.raises(ValueError, match="n_samples=1"):
        vc.train_mcem(small_model(), x, samples=100, n_samples=5)
    with pytest.raises(ValueError, match="hmc_transitions"):
        vc.train_mcem(small_model(), x, samples=100, hmc_transitions=0)
    with pytest.raises(ValueError, match="z_init"):
        vc.log_likelihood_hmc(small_model(), x[:3], z_init=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="prior_weight"):
        vc.log_likelihood_hmc(small_model(), x[:3], prior_weight=0.0)
    with pytest.raises(ValueError, match="n_chains"):
        vc.log_likelihood_hmc(small_model(), x[:3], n_chains=0)
