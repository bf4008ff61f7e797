"""Golden values: four tiny runs, one per algorithm, each under a protocol of the grid (data, optimizer, warm-up,
step-size rule, schedule and estimators as the protocol has them), trained on the CPU with one thread; their
history and metrics are frozen in tests/golden/<run>.json, so that any change of numbers is a decision, not an
accident. Where a change moves them on purpose (a protocol, the model, an estimator), refresh them with

    make golden        (that is: python -m pytest tests/test_golden.py --refresh-golden)

and commit tests/golden/ with the change that moved them (`git diff tests/golden` shows by how much)."""
import json
import math
from pathlib import Path

import pytest

from aevb import grid
from aevb.experiment import RunConfig, train_run

GOLDEN = Path(__file__).parent / "golden"
SMALL = dict(train_size=500, test_size=100, samples=2000, eval_points=3, device="cpu", checkpoint_every=10 ** 9)
RUNS = {  # name -> (protocol, its parameters made tiny)
    "aevb_report": (("mnist", "report"), dict(SMALL, algorithm="aevb", latent_dim=5, hidden=[50], is_points=5, is_k=50,
                                              refit_samples=500, appd_points=3)),
    "wake_sleep_kingma": (("mnist", "kingma"), dict(SMALL, algorithm="wake_sleep", latent_dim=5, hidden=[50],
                                                    warmup_steps=5, lr_trial_samples=1000)),
    "mcem_fig3n1000": (("mnist", "fig3n1000"), dict(grid.BATCH_MCEM, train_size=200, test_size=50, samples=600,
                                                    eval_points=2, log_px_points=3, log_px_k=20, algorithm="mcem",
                                                    latent_dim=3, device="cpu", checkpoint_every=10 ** 9)),
    "iwae_burda": (("mnist", "burda"), dict(SMALL, algorithm="iwae", n_samples=5, latent_dim=5, hidden=[50, 50],
                                            is_points=5, is_k=50)),  # 4 passes: stages 0 and 1 of the schedule
}
VARYING = ("wall_time", "device", "torch_version")  # what a run records that is not a number of the run


def numbers_of(run):
    history = [{k: v for k, v in row.items() if k not in VARYING} for row in run["history"]]
    metrics = {k: v for k, v in run["metrics"].items() if k not in VARYING}
    return {"history": history, "metrics": metrics}


def close(got, frozen, where=""):
    """Differences between two JSON-like values, numbers within 1e-4 relative or 1e-3 absolute (a CPU's
    vector width can move the last digits of a long sum); NaN equals NaN."""
    if isinstance(frozen, dict):
        if set(got) != set(frozen):
            return [f"{where}: keys {sorted(set(got) ^ set(frozen))} added or gone"]
        return [d for k in frozen for d in close(got[k], frozen[k], f"{where}.{k}")]
    if isinstance(frozen, list):
        if len(got) != len(frozen):
            return [f"{where}: {len(got)} rows, frozen {len(frozen)}"]
        return [d for i, (g, f) in enumerate(zip(got, frozen)) for d in close(g, f, f"{where}[{i}]")]
    if isinstance(frozen, float) and isinstance(got, (int, float)):
        if math.isnan(frozen) and math.isnan(got) or got == pytest.approx(frozen, rel=1e-4, abs=1e-3):
            return []
        return [f"{where}: {got!r}, frozen {frozen!r}"]
    return [] if got == frozen else [f"{where}: {got!r}, frozen {frozen!r}"]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", RUNS)
def test_a_tiny_run_ends_with_its_frozen_numbers(name, tmp_path, request):
    key, params = RUNS[name]
    config = RunConfig(**{**grid.PROTOCOLS[key], "dataset": key[0], "protocol": key[1], **params})
    got = {"parameters": {k: v for k, v in params.items()}, **numbers_of(train_run(config, tmp_path / name,
                                                                                   progress="none"))}
    got = json.loads(json.dumps(got))  # as the file holds it
    path = GOLDEN / f"{name}.json"
    if request.config.getoption("--refresh-golden"):
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return
    assert path.exists(), f"{path} is missing: make golden"
    frozen = json.loads(path.read_text())
    assert got["parameters"] == frozen["parameters"], "the run changed: refresh the golden values (module docstring)"
    differences = close(got, frozen)
    assert not differences, (f"{name} moved from its golden values (if on purpose: make golden):\n" + "\n".join(differences[:20]))
