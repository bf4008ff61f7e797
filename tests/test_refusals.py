"""Bad input refused early with a clear error, before any work: training arguments, estimator sizes and
a run the grid does not have."""
import subprocess

import pytest
import torch

import vae_core as vc
from aevb.estimators import log_likelihood, log_likelihood_hmc, log_likelihood_refit
from conftest import PY, ROOT, small_model


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=0.0), r"lr > 0.*got 100, 400, 0.0,"), (dict(lr=-1e-3), r"lr > 0.*got 100, 400, -0.001,"),
    (dict(n_samples=0), r"n_samples=0 must be an integer >= 1"),
    (dict(samples=50, batch_size=100), r"need 1 <= batch_size <= samples.*got 100, 50,")])
@pytest.mark.parametrize("algorithm", ["aevb", "iwae"])
def test_train_refuses_a_step_size_sample_count_or_budget_that_cannot_train(kwargs, message, algorithm):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        vc.train(model, torch.rand(200, 12), algorithm, **{"samples": 400, **kwargs})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained


@pytest.mark.parametrize("k", [0, -5])
def test_estimators_refuse_fewer_than_one_importance_sample(k):
    model, x = small_model(), torch.bernoulli(torch.full((4, 12), 0.3))
    with pytest.raises(ValueError, match=rf"k >= 1 importance samples \(got k={k}\)"):
        log_likelihood(model, x, k=k)
    with pytest.raises(ValueError, match=rf"k >= 1 importance samples \(got k={k}\)"):
        log_likelihood_refit(model, x, x, samples=100, k=k)
    with pytest.raises(ValueError, match=rf"need k, n_chains, n_hmc_samples >= 1.*\(got {k}, "):
        log_likelihood_hmc(model, x, k=k)


def test_grid_params_refuses_a_run_it_does_not_have(tmp_path):
    out = tmp_path / "x.params"
    result = subprocess.run([PY, "-m", "aevb.grid", "params", "mnist/aevb_z7_nothing_s1", "--profile", "smoke",
                             "--write", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and not out.exists()
    assert "aevb.grid: mnist/aevb_z7_nothing_s1 is not a run of the experiment grid (aevb/grid.py)\n" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([PY, "-m", "aevb.grid", "params", "mnist/aevb_z20_kingma_s1", "--profile", "huge",
                             "--write", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "profile 'huge' is not known" in result.stderr and not out.exists()
