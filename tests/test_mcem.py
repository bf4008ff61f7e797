"""HMC and Monte Carlo EM (Kingma & Welling, App. E)."""
import math

import pytest
import torch

import vae_core as vc
from aevb.estimators import log_likelihood_hmc
from conftest import changed_parameters, exact_log_px, small_model


# HMC makes many tiny autograd calls: on a busy machine one thread is several times faster than two
pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_hmc_runs_under_no_grad_and_moves_batched_chains_as_the_same_chains_flat():
    """Chains [4, 5, Nz] with a step size each are the 20 chains [20, Nz] moved one by one: the same draws give
    the same states (under no_grad too); a chain with step size 0 stays where it is."""
    target = gaussian_target(Z_LOC, Z_SCALE)
    z0, step_size = torch.randn(4, 5, 3), 0.1 + 0.5 * torch.rand(4, 5)
    step_size[0] = 0.0
    torch.manual_seed(1)
    with torch.no_grad():
        z, accept_prob, step_size_out = vc.hmc(target, z0, step_size, n_transitions=3)
    torch.manual_seed(1)
    flat, flat_accept, _ = vc.hmc(target, z0.reshape(20, 3), step_size.reshape(20), n_transitions=3)
    assert z.shape == (4, 5, 3) and accept_prob.shape == step_size_out.shape == (4, 5)
    assert torch.equal(z.reshape(20, 3), flat) and torch.equal(accept_prob.reshape(20), flat_accept)
    assert torch.equal(z[0], z0[0]) and (z[1:] != z0[1:]).any(-1).float().mean() > 0.8


def test_mcem_raises_log_likelihood_and_updates_only_the_decoder():
    torch.manual_seed(3)
    data = torch.bernoulli(torch.rand(4, 12)).repeat(100, 1)  # 4 prototypes: the best log p(x) is log 1/4
    x_eval = data[:40]
    model = small_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = exact_log_px(model, x_eval, n=301).mean()
    log_px_hmc = lambda m, state: {"train_log_px": log_likelihood_hmc(m, x_eval, k=1000).mean()}
    history = vc.train(model, data, "mcem", epochs=20, lr=3e-2, batch_size=50, eval_at=[400], eval_fn=log_px_hmc,
                            seed=3, device="cpu")
    end = exact_log_px(model, x_eval, n=301).mean()
    assert start < -9 and end > start + 5, (start, end)
    assert history[-1]["train_log_px"] > history[0]["train_log_px"] + 3
    assert abs(history[-1]["train_log_px"] - end) < 0.1  # the logged estimate is the right number
    assert changed_parameters(before, model) == {n for n in before if n.startswith("decoder.")}
    assert "train_elbo" not in history[-1]  # an unused encoder has no meaningful ELBO
    assert 0.8 < history[-1]["hmc_accept_prob"] < 0.97 and history[-1]["hmc_step_size"] > 0


def test_mcem_makes_its_decoder_updates_on_each_sample():
    """App. E: "followed by 5 weight updates steps using the acquired sample"."""
    x = torch.bernoulli(torch.full((50, 12), 0.3))
    for updates in (1, 5):
        torch.manual_seed(0)
        model = small_model()
        step = vc.MCEM(model, len(x), updates=updates)
        opt = torch.optim.Adam([p for _, p in step.named_parameters()], lr=0.01)
        chains_before = step.chains["z"].clone()
        sums = step(opt, x[:10], torch.arange(10))
        assert all(opt.state[p]["step"] == updates for p in model.decoder.parameters())
        assert not torch.equal(step.chains["z"][:10], chains_before[:10])  # one E-step moved the chains
        assert torch.equal(step.chains["z"][10:], chains_before[10:])
        if updates == 1:
            logged = sums
        else:  # the logged terms are those at the new sample, before the M-step, whatever the updates
            assert sums.keys() == logged.keys() and all(torch.equal(sums[k], logged[k]) for k in sums)
