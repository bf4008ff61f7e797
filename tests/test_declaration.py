"""Each run parameter is declared once: RunConfig's defaults are the training notebook's parameters
cell, scripts/run_notebook.py checks each value against the declared type, and config.json follows one
rule, so that a run with another value of anything it computes from is never reused."""
import ast
import dataclasses
import importlib.util
import inspect
import json
from pathlib import Path

import papermill
import pytest

import vae_core as vc
from aevb import experiment
from aevb.experiment import ALWAYS_RECORDED, DEFAULTS, NOT_RECORDED, RECORDED_WITH, RunConfig, saved_config
from conftest import ROOT, run_notebook

NOTEBOOK = ROOT / "notebooks" / "train.ipynb"


def load_run_notebook_script():
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "scripts" / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebooks_parameters_are_run_configs_fields_with_the_same_defaults_and_types():
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    page = {name for name, p in inspect.signature(experiment.train_run).parameters.items()
            if p.default is not inspect.Parameter.empty}  # how the page trains it, not what it computes
    assert set(declared) == set(fields) | page | {"run_dir", "run", "profile"}  # where, and which grid run
    for name, field in fields.items():
        default = ast.literal_eval(declared[name]["default"])
        assert default == DEFAULTS[name] and type(default) is type(DEFAULTS[name]), name
        assert declared[name]["inferred_type_name"] == field.type.__name__, name
    for name in page:
        default = inspect.signature(experiment.train_run).parameters[name].default
        assert declared[name]["inferred_type_name"] == type(default).__name__, name
    assert RunConfig.from_namespace({n: ast.literal_eval(p["default"]) for n, p in declared.items()}) == RunConfig()


@pytest.mark.parametrize("name, value, allowed", [
    ("lr", 1, True), ("lr", 0.5, True), ("lr", True, False), ("lr", "0.1", False), ("latent_dim", 2.0, False),
    ("hidden", [200, 200], True), ("hidden", "500", False), ("hidden", (500,), False), ("weight_prior", 1, False),
    ("weight_prior", False, True), ("dataset", "frey", True), ("lr_choices", "0.1 0.2", False), ("threads", 2, True)])
def test_run_notebook_checks_each_value_against_the_declared_type(name, value, allowed):
    script = load_run_notebook_script()
    error = script.type_error(name, value, papermill.inspect_notebook(str(NOTEBOOK))[name])
    assert (error is None) == allowed, error
    if not allowed:
        assert error.startswith(f"parameter {name}={value!r} is not allowed") and type(value).__name__ in error


def test_a_value_of_the_wrong_type_stops_the_notebook_before_any_kernel(tmp_path):
    result = run_notebook(tmp_path, "-p", "lr_choices", "0.01 0.02", "-p", "latent_dim", "3")
    assert result.returncode != 0
    assert "parameter lr_choices='0.01 0.02' is not allowed: a str" in result.stderr
    assert "latent_dim" not in result.stderr  # an int, as declared
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"parameters": {"hidden": "500", "lr": 1}}))
    result = run_notebook(tmp_path, "--params", params)
    assert result.returncode != 0 and "parameter hidden='500' is not allowed: a str" in result.stderr
    assert "parameter lr" not in result.stderr  # an int where a float is declared is fine
    assert not (tmp_path / "train.ipynb").exists()


def test_a_str_parameter_takes_the_text_itself():
    script = load_run_notebook_script()
    declared = papermill.inspect_notebook(str(NOTEBOOK))
    assert script.declared_type(declared["protocol"]) is str and script.declared_type(declared["hidden"]) is list
    assert script.type_error("protocol", "2024", declared["protocol"]) is None


class Sized:
    """Data of a given length: all saved_config reads of it."""
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def saved(config):
    n_train, n_test = (1765, 200) if config.dataset == "frey" else (60_000, 10_000)
    return saved_config(config, Sized(min(config.train_size or n_train, n_train)),
                        Sized(min(config.test_size or n_test, n_test)), "bernoulli")


# another valid value of each parameter, and what the config must hold beside it for the value to be used
OTHER = dict(dataset="frey", binarize="dynamic", pixel_scale=256, algorithm="wake_sleep", mcem_updates=5, latent_dim=3, hidden=[400],
             activation="relu", init="glorot", init_std=0.1, samples=1000, batch_size=50, n_samples=2,
             optimizer="adagrad", lr=0.01, lr_schedule="burda", adam_eps=1e-4, lr_choices=[0.02],
             lr_trial_samples=1000, weight_prior=True, warmup_steps=5, train_size=500, test_size=100, eval_points=5,
             log_px_points=7, log_px_k=50, is_points=5, is_k=100, refit_samples=1000, appd_points=3, protocol="other",
             seed=2, checkpoint_every=1000, device="cpu", mcem_step_size_rule="global", recognition="anglepy",
             output_bias="data_mean", minibatches="with_replacement", validation_size=100, appd_start="prior")
NEEDS = dict(mcem_updates=dict(algorithm="mcem"), mcem_step_size_rule=dict(algorithm="mcem"), log_px_k=dict(log_px_points=5), lr_trial_samples=dict(lr_choices=[0.1]),
             is_k=dict(is_points=10), refit_samples=dict(is_points=10))


def test_every_parameter_has_another_value_to_try():
    assert set(OTHER) == set(DEFAULTS) and all(OTHER[k] != DEFAULTS[k] for k in OTHER)
    assert set(RECORDED_WITH.values()) | set(ALWAYS_RECORDED) | set(NOT_RECORDED) <= set(DEFAULTS)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_run_with_another_value_of_a_parameter_has_another_config(name):
    base = RunConfig(**NEEDS.get(name, {}))
    changed = dataclasses.replace(base, **{name: OTHER[name]})
    before, after = saved(base), saved(changed)
    if name in NOT_RECORDED:  # how the run is made, not what it computes: the finished run is reused
        assert before == after
    else:
        assert before != after
        partners = {k for k, lead in RECORDED_WITH.items() if lead == name}  # recorded with it
        derived = {"lr_choices": {"lr"}, "init": {"init_std"}, "dataset": {"train_size", "test_size"}}.get(name, set())
        assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} <= {name} | partners | derived


def test_a_parameter_left_at_its_default_is_not_recorded_unless_every_config_records_it():
    config = saved(RunConfig())
    assert set(config) == set(ALWAYS_RECORDED) | {"likelihood", "code_hash"}
    glorot = saved(RunConfig(init="glorot", lr_choices=[0.01, 0.1], is_points=20_000))
    assert glorot["init_std"] is None and glorot["lr"] is None  # unused; lr is then a result, in the metrics
    assert glorot["is_points"] == 10_000 and glorot["is_k"] == DEFAULTS["is_k"]  # the test set's size at most
    assert glorot["lr_trial_samples"] == DEFAULTS["lr_trial_samples"] and "log_px_k" not in glorot


@pytest.mark.parametrize("bad, message", [
    ({"algorithm": "mcem", "n_samples": 5}, "parameter n_samples=5 is not allowed for mcem: it is an option of aevb, "
                                            "wake_sleep, iwae"),
    ({"mcem_updates": 2, "algorithm": "iwae"}, "parameter mcem_updates=2 is not allowed for iwae: it is an option "
                                                "of mcem"),
    ({"optimizer": "adagrad", "adam_eps": 1e-4}, "parameter adam_eps=0.0001 is not allowed for adagrad")])
def test_an_algorithms_option_is_refused_for_another(bad, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**bad)
    options = RunConfig(algorithm=bad["algorithm"] if "algorithm" in bad else "aevb").options()
    assert set(options) <= set(vc.ALGORITHMS[bad.get("algorithm", "aevb")].options)


def test_a_kernel_that_dies_before_it_starts_is_started_again_once(tmp_path, monkeypatch, capsys):
    script = load_run_notebook_script()
    calls = []

    def dies(*args, **kwargs):
        calls.append(kwargs["config"])
        raise RuntimeError("Kernel died before replying to kernel_info")
    monkeypatch.setattr(script.papermill, "execute_notebook", dies)
    with pytest.raises(RuntimeError, match="kernel_info"):
        script.main([str(NOTEBOOK), str(tmp_path / "out.ipynb")])
    assert len(calls) == script.KERNEL_START_ATTEMPTS == 2
    assert "the kernel died before it started" in capsys.readouterr().err

    calls.clear()
    outcomes = iter([RuntimeError("Kernel died before replying to kernel_info"), None])

    def dies_once(*args, **kwargs):
        calls.append(1)
        if (outcome := next(outcomes)) is not None:
            raise outcome
    monkeypatch.setattr(script.papermill, "execute_notebook", dies_once)
    script.main([str(NOTEBOOK), str(tmp_path / "out.ipynb")])
    assert len(calls) == 2

    calls.clear()

    def other(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("something else")  # not a kernel's start: no second try
    monkeypatch.setattr(script.papermill, "execute_notebook", other)
    with pytest.raises(RuntimeError, match="something else"):
        script.main([str(NOTEBOOK), str(tmp_path / "out.ipynb")])
    assert len(calls) == 1


def test_the_kernel_talks_over_unix_sockets(tmp_path):
    """Over TCP, ports picked and released before the kernel binds them can be taken by another
    kernel's client under make -j N; a Unix socket named after the connection file cannot."""
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "aevb", "display_name": "aevb",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(
        "import json, ipykernel.connect as c\n"
        "info = json.load(open(c.get_connection_file()))\n"
        "print(info['transport'], 'curve_secretkey' in info, info['ip'])")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    import subprocess
    import sys
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebook.py"), str(tmp_path / "in.ipynb"),
                             str(tmp_path / "out.ipynb")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs[0]["text"].split()
    assert out[:2] == ["ipc", "True"]  # and still encrypted with CurveZMQ
    # in a folder of its own, named absolutely (jupyter_client's default is relative: kernel-ipc-1.. in the
    # working directory, shared by kernels started at once), and removed afterwards
    assert Path(out[2]).is_absolute() and Path(out[2]).parent != ROOT and not Path(out[2]).parent.exists()
    assert not list(ROOT.glob("kernel-ipc*")) and not list(tmp_path.glob("kernel-ipc*"))


def test_kernels_started_at_once_each_get_their_own_sockets(tmp_path):
    """Six notebooks at once, as make -j6 starts them: each finishes and prints its own value."""
    import subprocess
    import sys

    import nbformat
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "aevb", "display_name": "aevb",
                                                           "language": "python"}})
    parameters = nbformat.v4.new_code_cell("value = 0")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell("print(value)")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    script = str(ROOT / "scripts" / "run_notebook.py")
    started = [subprocess.Popen([sys.executable, script, str(tmp_path / "in.ipynb"), str(tmp_path / f"out{i}.ipynb"),
                                 "-p", "value", str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(6)]
    for i, process in enumerate(started):
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        assert nbformat.read(tmp_path / f"out{i}.ipynb", 4).cells[-1].outputs[0]["text"].strip() == str(i)
