"""Run folders, the unit of caching: runs/<profile>/<dataset>/<run>/ holds config.json, history.csv,
model.pt and metrics.json. metrics.json is written last, so a folder without it is unfinished. While
a run trains, its folder also holds its checkpoint (`Checkpoint`, the one file vae_core's loop
writes).

A finished run whose config equals the one asked for is reused; one with another config is refused
(or retrained, when make says the run's parameters or code changed). The config carries the hash
of the code that trains (`code_hash`), so a run made by other code is never silently reused.
"""
import ast
import csv
import hashlib
import io
import json
import math
from contextlib import contextmanager
from pathlib import Path

from aevb import declared, imports, paths
from aevb.files import atomic_save, atomic_write_text, exclusive_lock

def training_code(entry="aevb/experiment.py", root=paths.ROOT):
    """The files whose code decides what a run computes: `entry` (the module that trains a run) and
    every module of the project it imports (aevb.imports.closure); and the training notebook, whose
    parameters cell declares a run's parameters and their defaults (aevb.declared)."""
    notebook = declared.TRAIN_NOTEBOOK.relative_to(paths.ROOT).as_posix()
    return (*sorted(imports.closure([entry], root)), notebook)


TRAINING_CODE = training_code()


def code_tree(path):
    """The syntax tree a file's code hash is made of: a module's code; of a notebook, its parameters
    cell (its other cells show a run, they do not make it)."""
    if path.suffix == ".ipynb":
        return ast.parse(declared.parameters_source(path))
    return ast.parse(path.read_text())


def code_hash(files=TRAINING_CODE, root=paths.ROOT):
    """A short hash of the code in `files` (training_code's): their syntax trees without docstrings
    or comments, so that an edited comment or docstring does not make every run stale, while any
    change to the code does."""
    digest = hashlib.sha256()
    for name in files:
        tree = code_tree(Path(root) / name)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()[:12]


def save_run(run_dir, config, history, model, extra_metrics=None):
    """Write a finished run. metrics.json holds the final train/test ELBO, reconstruction and KL,
    seed, device, torch version and wall time; it is written last, so a folder without it is
    unfinished."""
    import torch
    run_dir = Path(run_dir)
    final = history[-1]
    metrics = {k: final[k] for k in final if k.startswith(("train_", "test_"))}
    metrics.update(samples=final["samples"], epochs=final["epoch"], wall_time=final["wall_time"],
                   seed=config.get("seed"), device=str(next(model.parameters()).device),
                   torch_version=torch.__version__, **(extra_metrics or {}))
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", buffer.getvalue())
    atomic_save({"model_config": model.config, "state_dict": model.state_dict()},
                run_dir / "model.pt")
    atomic_write_text(run_dir / "metrics.json",
                      json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def load_summary(run_dir):
    """A finished run without its model: name ('<dataset>/<run>'), config, metrics, history (a list
    of rows). A relative run_dir is read from the repository root unless it exists from the working
    directory."""
    run_dir = paths.resolve(run_dir)
    if not (run_dir / "metrics.json").exists():
        raise FileNotFoundError(
            f"{run_dir} holds no finished run (no metrics.json); train it first "
            "(make runs, or the training notebook)")
    with open(run_dir / "history.csv", newline="") as f:
        history = [{k: (float(v) if v != "" else math.nan)
                    for k, v in row.items()} for row in csv.DictReader(f)]
    for row in history:
        row["samples"] = int(row["samples"])
    return {
        "name": f"{run_dir.parent.name}/{run_dir.name}", "config": json.loads(
            (run_dir / "config.json").read_text()), "metrics": json.loads(
                (run_dir / "metrics.json").read_text()), "history": history
    }


def load_run(run_dir, device="cpu"):
    """A finished run as load_summary's dict plus its model (a VAE in eval mode)."""
    import torch

    from vae_core import VAE
    run = load_summary(run_dir)
    saved = torch.load(paths.resolve(run_dir) / "model.pt", map_location=device, weights_only=True)
    model = VAE(**saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    return {**run, "model": model.to(device).eval()}


class Checkpoint:
    """A run's checkpoint file, handed to vae_core.train: at an epoch's end, every `every` training
    samples (None: each epoch), it saves atomically each part's state_dict (model, optimizer,
    step-size schedule, the algorithm's step), the RNG states and where the run stands; train
    resumes from it."""

    def __init__(self, path, every=None):
        self.path, self.every = Path(path), every
        self.saved_at = 0  # the training samples seen at the last save (or where the run resumed)

    def due(self, samples_seen, n_train):
        """Whether a save is due: `every` training samples (None: an epoch, n_train) since the
        last."""
        return samples_seen - self.saved_at >= (self.every or n_train)

    def save(self, parts, run, device):
        import torch
        rng = [torch.get_rng_state()]
        if device.type != "cpu":
            rng.append(torch.get_device_module(device).get_rng_state())
        states = {k: part.state_dict() for k, part in parts.items() if part is not None}
        atomic_save({**states, "rng": rng, **run}, self.path)
        self.saved_at = run["samples_seen"]

    def resume(self, parts, run, device):
        """Load the saved state into `parts` and return where the run stood (`run` itself if
        nothing was saved)."""
        import torch
        self.saved_at = run["samples_seen"]
        if not self.path.exists():
            return run
        state = torch.load(self.path, map_location=device, weights_only=False)
        for key, part in parts.items():
            if part is not None:
                part.load_state_dict(state[key])
        torch.set_rng_state(state["rng"][0].cpu())  # map_location moved it to the device
        if device.type != "cpu":
            torch.get_device_module(device).set_rng_state(state["rng"][1].cpu())
        self.saved_at = state["samples_seen"]
        return {key: state[key] for key in run}


def config_hash(config):
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def prepare_run(run_dir, config, replace_stale=False):
    """Decide what to do with run_dir for this config: return (finished, checkpoint_path).

    A finished run (metrics.json present) with exactly this config is reused. One with another
    config is refused, or with replace_stale=True (what `make` passes when a run's parameters or
    code changed) marked unfinished so that it is retrained. Checkpoints are named after the
    config, so a checkpoint of another config is never resumed.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        saved = json.loads((run_dir / "config.json").read_text())
        if saved == config:
            return True, None
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        if not replace_stale:
            raise RuntimeError(
                f"{run_dir} holds a finished run with another config ({detail}). Delete that "
                "folder to retrain it, or give this run another run_dir.")
        print(f"{run_dir} holds a finished run with another config ({detail}): retraining it")
        metrics.unlink()  # first, so that an interrupted retraining never looks finished
    checkpoint = run_dir / f"checkpoint-{config_hash(config)}.pt"
    for stale in run_dir.glob("checkpoint-*.pt"):
        if stale != checkpoint:
            stale.unlink()
    return False, checkpoint


@contextmanager
def run_lock(run_dir):
    """Hold an exclusive lock on run_dir while training, so two processes never write one run."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    busy = RuntimeError(f"another process is training {run_dir}; wait for it to finish")
    with exclusive_lock(run_dir / ".lock", busy):
        yield
