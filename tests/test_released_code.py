"""Where a paper is silent and the released code decides: each mechanism pinned by numbers against the
released source (yburda/iwae; dpkingma/anglepy), and followed by the protocols that say so."""
import math

import numpy as np
import pytest
import torch

import vae_core as vc
from aevb import estimators, experiment, grid, released
from aevb.experiment import RunConfig
from conftest import small_model


# ---- yburda/iwae, optimizers.py: `Adam.updatesIgrad_model` -------------------------------------------------

def released_adam(params, grad_fn, steps, lr=1e-3, beta_1=0.99, beta_2=0.999):
    """A NumPy transcription of yburda/iwae's optimizers.py `Adam` as Theano runs it: every update in the
    OrderedDict is computed from the old values (Theano's simultaneous updates), the gradient is of the
    bound (ascended) at the old parameters, first moments from zeros, second from ones, timestep from 1."""
    first = {k: np.zeros_like(v) for k, v in params.items()}
    second = {k: np.ones_like(v) for k, v in params.items()}
    timestep = 1.0
    trajectory = []
    for _ in range(steps):
        grad = grad_fn(params)
        alpha = lr * np.sqrt(1 - beta_2 ** timestep) / (1 - beta_1 ** timestep)
        new_params = {k: params[k] + alpha * first[k] / (np.sqrt(second[k]) + 1e-4) for k in params}
        first = {k: beta_1 * first[k] + (1 - beta_1) * grad[k] for k in params}
        second = {k: beta_2 * second[k] + (1 - beta_2) * np.square(grad[k]) for k in params}
        timestep, params = timestep + 1, new_params
        trajectory.append(params)
    return trajectory


def test_the_released_burda_adam_takes_the_steps_of_a_transcription_of_optimizers_py():
    """IwaeAdam on the mean loss with grad_scale M is their Adam on the minibatch's summed bound, step by
    step: the first step is zero (the moments it uses are the initial ones), then each uses the moments of
    the steps before it."""
    torch.manual_seed(0)
    m, d = 20, 5
    x = torch.randn(m, d, dtype=torch.float64)
    w0 = torch.randn(d, dtype=torch.float64)

    def bound_sum_grad(params):  # d/dw of sum_i -(x_i . w - 1)^2 / 2, the summed "bound" they ascend
        w = params["w"]
        return {"w": -((x.numpy() @ w - 1.0)[:, None] * x.numpy()).sum(0)}

    theirs = released_adam({"w": w0.numpy().copy()}, bound_sum_grad, steps=6)
    w = torch.nn.Parameter(w0.clone())
    opt = released.IwaeAdam([w], lr=1e-3, grad_scale=m)
    ours = []
    for _ in range(6):
        loss = (0.5 * (x @ w - 1.0) ** 2).mean()  # the mean loss, as our training steps descend it
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.append(w.detach().numpy().copy())
    np.testing.assert_array_equal(ours[0], w0.numpy())  # the first step is zero
    assert not np.allclose(ours[1], w0.numpy())
    for step, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b["w"], rtol=1e-12, atol=1e-15, err_msg=f"step {step + 1}")
    # the second step moves each coordinate by alpha_2 * (1 - beta_1) g_1 / (sqrt(beta_2 + (1 - beta_2) g_1^2) + 1e-4)
    g1 = -bound_sum_grad({"w": w0.numpy()})["w"]  # the summed loss's gradient
    alpha2 = 1e-3 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.99 ** 2)
    expected = w0.numpy() - alpha2 * 0.01 * g1 / (np.sqrt(0.999 + 0.001 * g1 ** 2) + 1e-4)
    np.testing.assert_allclose(ours[1], expected, rtol=1e-12)


def test_a_run_with_optimizer_adam_iwae_trains_with_the_released_adam_on_the_minibatchs_sum(monkeypatch):
    made = []
    make = vc.make_optimizer
    monkeypatch.setattr(vc.training, "make_optimizer", lambda *a, **kw: made.append(make(*a, **kw)) or made[-1])
    config = RunConfig(optimizer="adam_iwae", train_size=200, test_size=20, samples=400, batch_size=20, latent_dim=2,
                       hidden=[8], eval_points=1, device="cpu")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        run = experiment.train_run(config, d, progress="none")
    opt, = made
    assert isinstance(opt, released.IwaeAdam) and all(g["grad_scale"] == 20 and g["betas"] == (0.99, 0.999)
                                                       and g["lr"] == 1e-3 for g in opt.param_groups)
    assert all(s["step"] == 400 // 20 for s in opt.state.values())  # it made the run's steps
    assert run["config"]["optimizer"] == "adam_iwae"
    with pytest.raises(ValueError, match="adam_eps=0.0001 is not allowed for adam_iwae"):
        RunConfig(optimizer="adam_iwae", adam_eps=1e-4)


# ---- yburda/iwae: the output bias at the logit of the training mean; 400 images held out -----------------

def test_the_output_bias_starts_at_the_logit_of_the_training_mean_clipped_as_get_train_bias_np():
    x = torch.rand(50, 12)
    x[:, 0], x[:, 1] = 0.0, 1.0  # clipped to 0.001 and 0.999
    model = small_model()
    released.init_output_bias(model, x)
    mean = np.clip(x.numpy().mean(0), 0.001, 0.999)
    theirs = -np.log(1.0 / mean - 1.0)  # datasets.py: get_train_bias_np
    np.testing.assert_allclose(model.decoder[-1].bias.detach().numpy(), theirs, rtol=1e-5, atol=1e-5)
    assert model.decoder[-1].bias[0].item() == pytest.approx(math.log(0.001 / 0.999), rel=1e-5)
    # with z's influence at zero (weights zeroed), the decoder's mean is the data's mean
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        np.testing.assert_allclose(model.mean_x(torch.randn(3, 2))[0].numpy(), mean, rtol=1e-5)
    with pytest.raises(ValueError, match="Bernoulli"):
        released.init_output_bias(small_model("gaussian"), x)


def test_a_run_with_output_bias_data_mean_trains_from_that_bias_on_the_images_not_held_out(monkeypatch):
    seen = {}
    train = vc.train

    def spy(model, train_x, *args, **kwargs):
        seen["bias"], seen["n"] = model.decoder[-1].bias.detach().clone(), len(train_x)
        seen["train_x"] = train_x
        return train(model, train_x, *args, **kwargs)
    monkeypatch.setattr(vc, "train", spy)
    config = RunConfig(binarize="dynamic", train_size=1000, validation_size=400, test_size=50, samples=600,
                       batch_size=20, latent_dim=2, hidden=[16], init="glorot", output_bias="data_mean",
                       eval_points=1, device="cpu")
    train_x, test_x, _ = experiment.load_data(config)
    full = experiment.load_data(RunConfig(binarize="dynamic", train_size=1000, test_size=50))[0]
    assert len(train_x) == 600 and torch.equal(train_x, full[:600])  # the last 400 held out
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        run = experiment.train_run(config, d, progress="none")
    mean = train_x.double().mean(0).clamp(0.001, 0.999)
    assert seen["n"] == 600 and run["config"]["train_size"] == 600
    assert torch.allclose(seen["bias"].double(), torch.log(mean / (1 - mean)), atol=1e-5)
    assert run["config"]["output_bias"] == "data_mean" and run["config"]["validation_size"] == 400
    with pytest.raises(ValueError, match="validation_size=1000"):
        experiment.load_data(RunConfig(train_size=1000, validation_size=1000))
    with pytest.raises(ValueError, match="output_bias='data_mean' is not allowed"):
        RunConfig(dataset="frey", output_bias="data_mean")


def test_the_burda_protocols_follow_the_released_code_where_the_paper_is_silent():
    for protocol in ("burda", "burda-eps1e-4", "burda-adam-iwae"):
        p = grid.PROTOCOLS["mnist", protocol]
        assert p["output_bias"] == "data_mean" and p["validation_size"] == 400, protocol
        for profile in ("default", "paper"):
            run = grid.runs(protocol=protocol, algorithm="aevb", profile=profile)[0]
            passes = {"default": 1, "paper": 3280}[profile]
            assert run.params(profile)["samples"] == passes * 59_600
    assert grid.PROTOCOLS["mnist", "burda-zero-bias"]["output_bias"] == "init"
    assert grid.PROTOCOLS["mnist", "burda-adam-iwae"]["optimizer"] == "adam_iwae"
    assert grid.PROTOCOLS["mnist", "burda-static"]["validation_size"] == 0  # its own validation set


# ---- anglepy: App. D's chains from the prior, kept across evaluations (hmc_est.py `ll_estimator`) ---------

@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem"])
@pytest.mark.parametrize("start", ["prior", "encoder"])
def test_appendix_d_chains_start_by_one_rule_for_all_three_algorithms(monkeypatch, algorithm, start):
    """appd_start='prior': at the first evaluation every chain starts from the prior (z_init None), at each
    later one from where the same points' chains ended, for AEVB, wake-sleep and MCEM alike."""
    calls = []
    appd = estimators.log_likelihood_appendix_d

    def spy(model, x, z_init=None, **kwargs):
        out, last = appd(model, x, z_init=z_init, n_burnin=2, **kwargs)
        calls.append((None if z_init is None else z_init.clone(), last.clone()))
        return out, last
    monkeypatch.setattr(estimators, "log_likelihood_appendix_d", spy)
    config = RunConfig(algorithm=algorithm, train_size=200, test_size=20, samples=400, latent_dim=2, hidden=[8],
                       batch_size=0 if algorithm == "mcem" else 100, log_px_points=5, log_px_k=10, eval_points=2,
                       appd_start=start, device="cpu", **({"lr": 0.02} if algorithm == "mcem" else {}))
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        experiment.train_run(config, d, progress="none")
    assert len(calls) == 4  # train and test points at 2 evaluations
    (train1, end_train1), (test1, end_test1), (train2, _), (test2, _) = calls
    if start == "prior":
        assert train1 is None and test1 is None
        assert torch.equal(train2, end_train1) and torch.equal(test2, end_test1)
    else:  # the labelled alternative: q(z|x), and for MCEM its own chains (training points) and the prior (test)
        assert train1 is not None and train2 is not None and not torch.equal(train2, end_train1)
        assert (test1 is None and torch.equal(test2, end_test1)) if algorithm == "mcem" else test1 is not None


def test_figure_3s_protocols_start_app_d_from_the_prior_for_every_algorithm():
    for protocol in ("fig3n1000", "fig3n50000", "fig3n1000-online"):
        assert grid.PROTOCOLS["mnist", protocol]["appd_start"] == "prior"
    assert grid.PROTOCOLS["mnist", "fig3n1000-encoder"]["appd_start"] == "encoder"
    assert {r.algorithm for r in grid.runs(protocol="fig3n1000-encoder", profile="default")} == {
        "aevb", "wake_sleep", "mcem"}


# ---- anglepy, hmc.py `hmc_step_autotune`: one step size for all chains -------------------------------------

def test_the_global_step_size_moves_by_1_25_toward_90_percent_acceptance():
    step = torch.tensor(1e-2)
    many = torch.ones(1000, dtype=torch.bool)
    many[:50] = False  # 95% accepted
    assert vc.global_step_size(step, many).item() == pytest.approx(1.25e-2)
    many[:500] = False  # 50% accepted
    assert vc.global_step_size(step, many).item() == pytest.approx(0.8e-2)
    few = torch.tensor([True, True, False, True, True])  # 80% of 5 chains: factor 1.02^5
    assert vc.global_step_size(step, few).item() == pytest.approx(1e-2 / 1.02 ** 5)


def test_hmc_with_a_global_step_size_applies_the_rule_to_the_fraction_accepted():
    torch.manual_seed(0)
    z0 = torch.randn(400, 2)
    log_density = lambda z: vc.log_standard_normal(z)  # noqa: E731
    for start in (0.01, 3.0):  # a small step is accepted by nearly all chains, a large one by few
        z, _, step = vc.hmc(log_density, z0, start, n_transitions=1, adapt="global")
        rate = (z != z0).any(-1).float().mean().item()
        assert torch.all(step == step[0])
        assert step[0].item() == pytest.approx(start * 1.25 if rate >= 0.9 else start / 1.25)


def test_batch_mcem_with_the_global_rule_starts_every_chain_at_1e_2_and_keeps_them_equal():
    x = torch.bernoulli(torch.rand(40, 12))
    states = []
    vc.train(small_model(), x, "mcem", samples=3 * 40, batch_size=40, optimizer="adagrad", lr=0.02,
             eval_at=[40, 80, 120], device="cpu", updates=5, step_size_rule="global",
             eval_fn=lambda m, state: states.append(state["chains"]["step_size"].clone()) or {})
    for i, s in enumerate(states):  # after iteration i + 1, 1e-2 times 1.25^k / 1.25^(i + 1 - k)
        assert torch.all(s == s[0])
        k = round((math.log(s[0].item() / 1e-2) / math.log(1.25) + i + 1) / 2)
        assert s[0].item() == pytest.approx(1e-2 * 1.25 ** (2 * k - i - 1), rel=1e-5)
    for protocol in ("fig3n1000", "fig3n50000"):
        for run in grid.runs(protocol=protocol, algorithm="mcem"):
            assert run.params("default")["mcem_step_size_rule"] == "global"
    with pytest.raises(ValueError, match="step_size_rule='both' must be one of"):
        vc.MCEM.check({"step_size_rule": "both"})


# ---- anglepy's wake-sleep recognition model (models/MLBN_Inverse.py) and minibatches (wzoptim.py) ----------

def test_the_anglepy_recognition_model_scales_the_log_variance_weights_by_0_1_from_zero():
    torch.manual_seed(0)
    model = vc.VAE(12, 3, hidden=(8,), recognition="anglepy")
    out = model.encoder[-1]
    assert torch.all(out.weight[3:] == 0) and torch.all(out.bias[3:] == 0)  # MLBN_Inverse.init_w: zeros
    assert out.weight[:3].std() > 0
    with torch.no_grad():
        out.weight.normal_()
        out.bias.normal_()
    x = torch.rand(5, 12)
    h = model.encoder[:-1](x)
    z_loc, z_logvar = model.encode(x)
    torch.testing.assert_close(z_loc, h @ out.weight[:3].T + out.bias[:3])
    torch.testing.assert_close(z_logvar, 0.1 * h @ out.weight[3:].T + out.bias[3:])  # logvar_factor on w only
    # the log-variance weights' gradient is a tenth of the unscaled layer's: Adagrad's step in them moves
    # the log-variance a tenth as far
    z_logvar.sum().backward()
    plain = vc.VAE(12, 3, hidden=(8,))
    plain.load_state_dict(model.state_dict())
    plain.encode(x)[1].sum().backward()
    torch.testing.assert_close(out.weight.grad[3:], 0.1 * plain.encoder[-1].weight.grad[3:])
    assert "row_scale" not in model.state_dict()  # a checkpoint holds the parameters alone
    assert torch.equal(vc.VAE(**model.config).row_scale, model.row_scale)  # a reloaded run keeps the scale
    assert torch.all(vc.VAE(12, 3, hidden=(8,)).row_scale == 1)  # the paper's: no scale


def test_minibatches_with_replacement_draw_each_point_uniformly(monkeypatch):
    seen = []
    call = vc.AEVB.__call__
    monkeypatch.setattr(vc.AEVB, "__call__", lambda self, opt, xb, idx: seen.append(idx.clone()) or call(self, opt, xb, idx))
    x = torch.rand(50, 12)
    for minibatches in ("epochs", "with_replacement"):
        seen.clear()
        vc.train(small_model(), x, "aevb", samples=50 * 40, batch_size=50, device="cpu", minibatches=minibatches)
        duplicates = sum(len(i) - len(i.unique()) for i in seen)
        assert (duplicates == 0) == (minibatches == "epochs")
    counts = torch.bincount(torch.cat(seen), minlength=50).float()
    assert counts.mean() == 40 and counts.std() > 2  # a multinomial's spread, not a pass's
    with pytest.raises(ValueError, match="minibatches='with_replacement' is not allowed"):
        RunConfig(algorithm="mcem", minibatches="with_replacement")


def test_the_anglepy_aevb_model_starts_its_log_variance_layer_and_output_biases_at_zero():
    """models/MLEM.py, `DLVM.init_w` (what wzoptim.py's `step_va` trains): q_logvar_w, q_logvar_b, out_b and
    out_logvar_b are zeros; every other parameter N(0, 0.01); no scale on the log-variance."""
    for likelihood in ("bernoulli", "gaussian"):
        torch.manual_seed(0)
        model = vc.VAE(12, 3, hidden=(8,), likelihood=likelihood, recognition="anglepy-va")
        out, dec = model.encoder[-1], model.decoder[-1]
        assert torch.all(out.weight[3:] == 0) and torch.all(out.bias[3:] == 0)
        assert torch.all(dec.bias == 0) and dec.bias.numel() == (12 if likelihood == "bernoulli" else 24)
        assert 0.005 < out.weight[:3].std() < 0.02 and 0.005 < dec.weight.std() < 0.02
        assert torch.all(model.row_scale == 1)
        torch.manual_seed(0)  # the same draws as the paper's model elsewhere
        paper = vc.VAE(12, 3, hidden=(8,), likelihood=likelihood)
        assert torch.equal(paper.encoder[0].weight, model.encoder[0].weight)
        assert torch.equal(paper.encoder[-1].weight[:3], out.weight[:3])


def test_kingma_runs_each_algorithms_released_model_and_kingma_paper_the_papers_text():
    for dataset in ("mnist", "frey"):
        kingma, text = grid.PROTOCOLS[dataset, "kingma"], grid.PROTOCOLS[dataset, "kingma-paper"]
        assert kingma["recognition"] == "released" and kingma["minibatches"] == "with_replacement"
        # they differ in those two settings alone
        assert {k: v for k, v in kingma.items() if text.get(k) != v} == grid.RELEASED
        assert RunConfig(**text).recognition == "paper" and RunConfig(**text).minibatches == "epochs"
    assert released.recognition("released", "aevb") == "anglepy-va"
    assert released.recognition("released", "wake_sleep") == "anglepy"
    assert released.recognition("paper", "aevb") == "paper"
    for algorithm in ("iwae", "mcem"):  # anglepy of that time has no model of theirs to follow
        with pytest.raises(ValueError, match="recognition='released' is not allowed"):
            RunConfig(algorithm=algorithm, recognition="released", minibatches="epochs")
    # recognition model x step at Nz = 200, three seeds each, in every profile
    for profile in grid.PROFILES:
        for protocol in ("kingma", "kingma-lr0.02", "kingma-paper", "kingma-paper-lr0.02"):
            assert [r.seed for r in grid.runs(protocol=protocol, algorithm="wake_sleep", latent_dim=200,
                                              profile=profile)] == [1, 2, 3], (profile, protocol)
    assert grid.PROTOCOLS["mnist", "kingma-paper-lr0.02"]["lr"] == 0.02
    assert not grid.PROTOCOLS["mnist", "kingma-paper-lr0.02"]["lr_choices"]
    assert {r.latent_dim for r in grid.runs(protocol="kingma-paper", dataset="frey")} == {10, 20}
