"""Golden values: four tiny runs, one per algorithm, each under a protocol of the grid (data, optimizer, warm-up,
step-size rule, schedule and estimators as the protocol has them), trained on the CPU with one thread; their
history and metrics are frozen in tests/golden/<run>.json, so that any change of numbers is a decision, not an
accident. Where a change moves them on purpose (a protocol, the model, an estimator), refresh them with

    make golden        (that is: python -m pytest tests/test_golden.py --refresh-golden)

and commit tests/golden/ with the change that moved them (`git diff tests/golden` shows by how much).

The frozen numbers hold on any x86 CPU, whatever kernels PyTorch, MKL and oneDNN pick there (AVX-512 and AMX,
AVX2, SSE4.2), because each number is held to a tolerance that says why it is that size (TOLERANCES):
- the training arithmetic, evaluated bounds and IS through q(z|x), tight: another kernel only reorders float32
  sums;
- an estimate made by HMC chains (App. D's estimator, MCEM's HMC-fitted proposal), by its own standard error:
  the last bit another kernel rounds differently can flip one accept/reject decision of a chain, and from
  there the chain is another draw, so two CPUs give two draws of the same estimator.
test_the_frozen_numbers_hold_on_other_kernel_paths runs the tiny runs again under narrower instruction sets
(the environment variables of KERNEL_PATHS) and checks both that a number moved and that all still pass.

`python tests/test_golden.py OUT.json` writes the four runs' numbers as trained here (what that test reads).
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from aevb import grid
from aevb.experiment import RunConfig, train_run

GOLDEN = Path(__file__).parent / "golden"
SMALL = dict(train_size=500, test_size=100, samples=2000, eval_points=3, device="cpu", checkpoint_every=10 ** 9)
RUNS = {  # name -> (protocol, its parameters made tiny)
    "aevb_report": (("mnist", "report"), dict(SMALL, algorithm="aevb", latent_dim=5, hidden=[50], is_points=10,
                                              is_k=50, refit_samples=500, appd_points=10)),
    "wake_sleep_kingma": (("mnist", "kingma"), dict(SMALL, algorithm="wake_sleep", latent_dim=5, hidden=[50],
                                                    warmup_steps=5, lr_trial_samples=1000)),
    "mcem_fig3n1000": (("mnist", "fig3n1000"), dict(grid.BATCH_MCEM, train_size=200, test_size=50, samples=600,
                                                    eval_points=2, log_px_points=10, log_px_k=20, algorithm="mcem",
                                                    latent_dim=3, device="cpu", checkpoint_every=10 ** 9)),
    "iwae_burda": (("mnist", "burda"), dict(SMALL, algorithm="iwae", n_samples=5, latent_dim=5, hidden=[50, 50],
                                            is_points=5, is_k=50)),  # 4 passes: stages 0 and 1 of the schedule
}
VARYING = ("wall_time", "device", "torch_version")  # what a run records that is not a number of the run

# ---- how close is close enough, and why ------------------------------------------------------------------
TIGHT_REL, TIGHT_ABS = 1e-5, 1e-4
TRIAL_REL = 1e-3
SE_MULTIPLE = 3
TOLERANCES = {
    "arithmetic": f"within {TIGHT_REL:g} relative or {TIGHT_ABS:g} nats absolute: another CPU's kernels reorder "
                  "float32 sums, which moved these numbers by 2e-7 relative at most (SSE4.2 against AVX-512 "
                  "kernels on one CPU), and a wrong pixel scale moves them by 5e-5",
    "terms": f"within {TIGHT_REL:g} of the bound they sum to (its nats, not their own): a KL near zero (0.13 nats, "
             "wake-sleep) moved by 1.8e-4 nats under SSE4.2 kernels, 1e-3 of itself but 1e-6 of the bound",
    "trials": f"within {TRIAL_REL:g} relative: a step-size trial at too large a step diverges and amplifies "
              "rounding (3e-5 relative measured); what the trials decide, the chosen step, is held exactly ('lr')",
    "chains": f"within {SE_MULTIPLE} x sqrt(se_frozen^2 + se_now^2) nats: a kernel's last bit can flip a chain's "
              "accept/reject and the estimate becomes another draw; two draws differ by sqrt(se1^2 + se2^2) "
              f"at most in standard deviation (se over the points bounds the Monte Carlo part), {SE_MULTIPLE} of "
              "them fail a correct run about once in 370",
}
# Estimates made by HMC chains (their `_se` beside them): App. D's estimator for every algorithm, and for MCEM,
# which has no encoder, importance sampling with a proposal fitted to HMC samples (estimators.log_likelihood_hmc).
CHAIN_ESTIMATES = {"aevb": r"(train|test)_log_px_appd", "wake_sleep": r"(train|test)_log_px_appd",
                   "iwae": r"(train|test)_log_px_appd", "mcem": r"(train|test)_log_px_(appd|is)"}


def rule(algorithm, key):
    """Which tolerance of TOLERANCES holds `key` of a run of `algorithm`: 'chains' for an estimate made by HMC
    chains and for its standard error, 'terms' for the KL and reconstruction terms of a bound, else
    'arithmetic'."""
    if key == "lr_trial_train_elbo":
        return "trials"
    if re.fullmatch(r"(train|test)_(kl|recon)", key):
        return "terms"
    return "chains" if re.fullmatch(CHAIN_ESTIMATES[algorithm] + "(_se)?", key) else "arithmetic"


def value_differs(got, frozen, key, row_got, row_frozen, algorithm):
    """None if `got` is close enough to `frozen` for `key` (its row's standard errors at hand), else why not."""
    if isinstance(frozen, dict):
        return None if got == frozen else f"{got!r}, frozen {frozen!r}"  # the step-size trials: compared below
    if not isinstance(frozen, float) or not isinstance(got, (int, float)):
        return None if got == frozen else f"{got!r}, frozen {frozen!r}"
    if math.isnan(frozen) or math.isnan(got):
        return None if math.isnan(frozen) and math.isnan(got) else f"{got!r}, frozen {frozen!r}"
    if (how := rule(algorithm, key)) == "terms":  # a term of the bound: the bound's tolerance in nats
        bound = row_frozen[key.rsplit("_", 1)[0] + "_elbo"]
        ok = abs(got - frozen) <= max(TIGHT_ABS, TIGHT_REL * abs(bound))
        return None if ok else f"{got!r}, frozen {frozen!r} (tolerance: {TOLERANCES[how]})"
    if how != "chains":
        ok = got == pytest.approx(frozen, rel=TIGHT_REL if how == "arithmetic" else TRIAL_REL, abs=TIGHT_ABS)
        return None if ok else f"{got!r}, frozen {frozen!r} (tolerance: {TOLERANCES[how]})"
    estimate = key.removesuffix("_se")
    se_got, se_frozen = row_got.get(f"{estimate}_se"), row_frozen.get(f"{estimate}_se")
    if se_got is None or se_frozen is None:
        return f"{estimate} has no standard error beside it, so nothing says how far it may move"
    bound = SE_MULTIPLE * math.hypot(se_got, se_frozen)
    if abs(got - frozen) <= bound:
        return None
    return f"{got!r}, frozen {frozen!r}: moved {abs(got - frozen):.3g} > {bound:.3g} ({TOLERANCES['chains']})"


def differences(got, frozen, algorithm):
    """What moved between a run's numbers and its frozen ones, each number judged by its rule."""
    out = []
    for part in ("history", "metrics"):
        rows_got, rows_frozen = ((got[part], frozen[part]) if part == "history" else ([got[part]], [frozen[part]]))
        if len(rows_got) != len(rows_frozen):
            out.append(f"{part}: {len(rows_got)} rows, frozen {len(rows_frozen)}")
            continue
        for i, (g, f) in enumerate(zip(rows_got, rows_frozen)):
            where = f"{part}[{i}]" if part == "history" else part
            if set(g) != set(f):
                out.append(f"{where}: keys {sorted(set(g) ^ set(f))} added or gone")
                continue
            for key in f:
                if isinstance(f[key], dict) and isinstance(g[key], dict):  # {step size: its trial's bound}
                    if set(g[key]) != set(f[key]):
                        out.append(f"{where}.{key}: {sorted(g[key])}, frozen {sorted(f[key])}")
                    out += [f"{where}.{key}.{k}: {why}" for k in f[key] if k in g[key]
                            and (why := value_differs(g[key][k], f[key][k], key, g, f, algorithm))]
                elif why := value_differs(g[key], f[key], key, g, f, algorithm):
                    out.append(f"{where}.{key}: {why}")
    return out


# ---- the tiny runs -----------------------------------------------------------------------------------------
def numbers_of(run):
    history = [{k: v for k, v in row.items() if k not in VARYING} for row in run["history"]]
    metrics = {k: v for k, v in run["metrics"].items() if k not in VARYING}
    return json.loads(json.dumps({"history": history, "metrics": metrics}))  # as the file holds them


def train_tiny(name, folder, **changes):
    """The tiny run `name` trained into `folder` on one thread, from seed 0 as the tests run it; `changes`:
    parameters other than the frozen run's (a planted change)."""
    key, params = RUNS[name]
    config = RunConfig(**{**grid.PROTOCOLS[key], "dataset": key[0], "protocol": key[1], **params, **changes})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        return numbers_of(train_run(config, Path(folder) / name, progress="none"))
    finally:
        torch.set_num_threads(threads)


def frozen_numbers(name):
    path = GOLDEN / f"{name}.json"
    assert path.exists(), f"{path} is missing: make golden"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def trained_here(tmp_path_factory):
    """Each tiny run's numbers as trained here, trained once for every test of this file that asks."""
    cache = {}

    def numbers(name):
        if name not in cache:
            cache[name] = train_tiny(name, tmp_path_factory.mktemp(name))
        return cache[name]
    return numbers


@pytest.mark.parametrize("name", RUNS)
def test_a_tiny_run_ends_with_its_frozen_numbers(name, trained_here, request):
    got = {"parameters": RUNS[name][1], **trained_here(name)}
    path = GOLDEN / f"{name}.json"
    if request.config.getoption("--refresh-golden"):
        path.write_text(json.dumps(json.loads(json.dumps(got)), indent=1, sort_keys=True) + "\n")
        return
    frozen = frozen_numbers(name)
    assert json.loads(json.dumps(got["parameters"])) == frozen["parameters"], \
        "the run changed: refresh the golden values (module docstring)"
    moved = differences(got, frozen, RUNS[name][1]["algorithm"])
    assert not moved, f"{name} moved from its golden values (if on purpose: make golden):\n" + "\n".join(moved[:20])


# ---- the tolerances bite ---------------------------------------------------------------------------------
def test_every_number_of_the_golden_runs_has_a_rule_and_every_chain_estimate_its_standard_error():
    for name, (_, params) in RUNS.items():
        frozen = frozen_numbers(name)
        for row in frozen["history"] + [frozen["metrics"]]:
            chains = [k for k in row if rule(params["algorithm"], k) == "chains"]
            assert all(f"{k.removesuffix('_se')}_se" in row for k in chains), (name, chains)
    # App. D's estimates are held by their standard error, training's numbers tightly; IS with an encoder is tight
    assert rule("aevb", "test_log_px_appd") == rule("mcem", "train_log_px_is_se") == "chains"
    assert rule("aevb", "test_log_px_is") == rule("mcem", "running_log_joint") == rule("aevb", "test_elbo") \
        == "arithmetic" and rule("wake_sleep", "lr_trial_train_elbo") == "trials"
    assert rule("wake_sleep", "test_kl") == rule("aevb", "train_recon") == "terms"
    assert {"mcem", "aevb", "iwae", "wake_sleep"} == set(CHAIN_ESTIMATES)


def test_a_move_beyond_a_tolerance_is_reported_and_one_within_it_is_not():
    frozen = {"history": [{"samples": 100, "test_elbo": -100.0, "test_kl": 0.1, "test_log_px_appd": -90.0,
                           "test_log_px_appd_se": 1.0}],
              "metrics": {"lr_trial_train_elbo": {"0.01": -120.0}, "test_log_px_appd": -90.0,
                          "test_log_px_appd_se": 1.0}}

    def moved(**changes):
        got = json.loads(json.dumps(frozen))
        for where, key, value in changes.values():
            (got["history"][0] if where == "history" else got["metrics"])[key] = value
        return differences(got, frozen, "aevb")
    bound = SE_MULTIPLE * math.hypot(1.0, 1.0)
    assert moved() == []
    assert moved(a=("history", "test_elbo", -100.0005)) == []  # 5e-6 relative: a kernel's rounding
    assert moved(a=("history", "test_elbo", -100.002)) != []   # 2e-5 relative
    assert moved(a=("history", "test_kl", 0.1009)) == []  # 9e-4 nats: 9e-6 of the bound it sums to
    assert moved(a=("history", "test_kl", 0.1011)) != []  # 1.1e-5 of the bound
    assert moved(a=("metrics", "lr_trial_train_elbo", {"0.01": -120.06})) == []  # 5e-4: a diverging trial
    assert moved(a=("metrics", "test_log_px_appd", -90.0 - 0.99 * bound)) == []
    assert moved(a=("metrics", "test_log_px_appd", -90.0 - 1.01 * bound)) != []
    assert moved(a=("metrics", "lr_trial_train_elbo", {"0.01": -120.2})) != []
    assert moved(a=("metrics", "lr_trial_train_elbo", {"0.02": -120.0})) != []
    assert moved(a=("metrics", "test_log_px_appd_se", float("nan"))) != []
    got = json.loads(json.dumps(frozen))
    del got["history"][0]["test_log_px_appd_se"], frozen["history"][0]["test_log_px_appd_se"]
    assert "no standard error" in differences(got, frozen, "aevb")[0]


@pytest.mark.parametrize("plant", ["pixel scale 256", "KL dropped"])
def test_a_planted_change_fails_the_golden_values(plant, tmp_path, monkeypatch):
    """A change that moves what trains (a wrong pixel scale; the KL term dropped from AEVB's objective) is
    caught by the tolerances above, which must stay tight enough for that."""
    import vae_core as vc
    if plant == "KL dropped":
        kl = vc.kl_to_standard_normal
        where = sys.modules[kl.__module__]
        monkeypatch.setattr(where, "kl_to_standard_normal", lambda loc, logvar: 0 * kl(loc, logvar))
        got = train_tiny("aevb_report", tmp_path)
    else:
        got = train_tiny("aevb_report", tmp_path, pixel_scale=256)
    moved = differences(got, frozen_numbers("aevb_report"), "aevb")
    assert any(m.startswith("history[") for m in moved), moved  # caught in what trained, not only estimates


# ---- other kernel paths ------------------------------------------------------------------------------------
# Each narrows what PyTorch's own kernels (ATen), MKL's matmuls and oneDNN may use, below what a current x86 CPU
# offers (AVX-512 and AMX on a recent Xeon, AVX-512 or AVX2 on an EPYC): the numbers of another CPU, here.
KERNEL_PATHS = {
    "AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "SSE4.2": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def trained_under(path, out):
    """The four tiny runs trained in a fresh process under a kernel path: (their numbers, ATen's capability)."""
    env = {**os.environ, **KERNEL_PATHS[path], "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = json.loads(Path(out).read_text())
    return dumped["runs"], dumped["cpu_capability"]


@pytest.mark.slow
def test_the_frozen_numbers_hold_on_other_kernel_paths(trained_here, tmp_path):
    here = {name: trained_here(name) for name in RUNS}
    moved_by = {}
    for path in KERNEL_PATHS:
        runs, capability = trained_under(path, tmp_path / f"{path}.json")
        expected = KERNEL_PATHS[path]["ATEN_CPU_CAPABILITY"].upper()
        assert capability in (expected, torch.backends.cpu.get_cpu_capability()), capability  # as set (or less)
        for name in RUNS:
            moved = differences(runs[name], frozen_numbers(name), RUNS[name][1]["algorithm"])
            assert not moved, f"{name} under {path} moved from its golden values:\n" + "\n".join(moved[:20])
        moved_by[path] = sum(a != b for name in RUNS for a, b in zip(leaves(runs[name]), leaves(here[name])))
    # on a CPU where no setting reaches other kernels, this test would check nothing: it says so by failing
    assert any(moved_by.values()), f"no kernel path moved a number here ({moved_by}): nothing was tested"


def leaves(value):
    """The numbers of a JSON-like value, in order."""
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in leaves(value[k])]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


if __name__ == "__main__":  # the four runs' numbers as trained in this process (trained_under reads them)
    with tempfile.TemporaryDirectory() as folder:
        numbers = {name: train_tiny(name, folder) for name in RUNS}
    Path(sys.argv[1]).write_text(json.dumps({"runs": numbers, "cpu_capability": torch.backends.cpu.get_cpu_capability()}))
