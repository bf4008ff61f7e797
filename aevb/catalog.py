"""Finished runs by name: `load("mnist/aevb_z2_report_s1", profile="smoke")` from any notebook or
folder.

A profile's runs are in runs/<profile>/<dataset>/<run>/ (the Makefile's RUNS); notebooks/train.ipynb
puts the runs it trains by hand in runs/interactive/, a folder make never reads. A path relative to
the repository works from any working directory. A run that is not finished where it was asked for
is refused with the profiles that do have it finished.
"""
import json
import os
import re
import sys
from pathlib import Path

from aevb import grid, paths
from aevb.declared import DATASETS

INTERACTIVE = "interactive"  # runs/interactive/: train.ipynb's own runs, outside every profile


def runs_root(root=None):
    """The folder of every profile's runs folder: runs/ in the repository, unless `root` is
    given."""
    return Path(root) if root else paths.ROOT / "runs"


# relative paths from the repository root (or, to read, from the working directory where they exist)
resolve = paths.resolve


def is_name(text):
    """'<dataset>/<run>', a run's name below its profile's folder (not a path to a folder)."""
    return bool(re.fullmatch(rf"({'|'.join(DATASETS)})/[^/]+", str(text)))


def finished(folder):
    return (Path(folder) / "metrics.json").exists()


def profiles_with(name, root=None):
    """The folders below runs/ that hold a finished run `name`: each profile's, then
    runs/interactive/'s."""
    root = runs_root(root)
    found = [p for p in grid.PROFILES if finished(root / p / name)]
    found += [
        f.name for f in sorted(root.glob("*")) if f.name not in grid.PROFILES and finished(f / name)
    ]
    found += [
        f"{INTERACTIVE}/{p}" for p in grid.PROFILES if finished(root / INTERACTIVE / p / name)
    ]
    return found


def find(name, profile="default", root=None):
    """The folder of a finished run: `name` is '<dataset>/<run>' of `profile`
    (runs/<profile>/<name>), or a path to a run folder. Refuses one that is not finished, naming the
    profiles that have it finished."""
    if is_name(name):
        folder = runs_root(root) / profile / name
    else:
        folder = resolve(name)
    if finished(folder):
        return folder
    if not is_name(name):
        raise FileNotFoundError(f"{folder} holds no finished run (no metrics.json). A run by name: "
                                "load('mnist/aevb_z2_report_s1', profile='smoke')")
    others = profiles_with(name, root)
    in_grid = any(r.name == name for r in grid.runs())
    known = "" if in_grid else " (it is not a run of the experiment grid, aevb/grid.py)"
    if others:
        hint = (f"It is finished in profile {', '.join(repr(p) for p in others)}: load({name!r}, "
                f"profile={others[0]!r}).")
    else:
        hint = (
            "No profile has it finished: train it with `make "
            f"{Path('runs') / profile / name}/metrics.json "
            f"PROFILE={profile}`, or notebooks/train.ipynb with run={name!r} and "
            f"profile={profile!r}."
        )
    raise FileNotFoundError(
        f"no finished run {name}{known} in profile {profile!r} ({folder}). {hint}")


def load(name, profile="default", model=True, device="cpu", root=None):
    """A finished run by name (or by its folder): aevb.runs.load_run's dict (name, config, metrics,
    history, model), plus its folder; model=False: without the model (load_summary, no torch needed
    to read it)."""
    from aevb.runs import load_run, load_summary
    folder = find(name, profile, root)
    run = load_run(folder, device) if model else load_summary(folder)
    return {**run, "folder": folder}


def test_data(run, n=None):
    """(x, labels) of the test points the run was evaluated on (its config's first test_size, and
    its binarization and pixel scale); labels is None for Frey Face. n: only the first n of them."""
    from aevb import data
    config = run["config"]
    x, labels = data.load(config["dataset"], "test", config["binarize"],
                          pixel_scale=config.get("pixel_scale", 255))
    n = min(config["test_size"], n or config["test_size"])
    return x[:n], (labels[:n] if labels is not None else None)


def finished_runs(folder):
    """Every finished run below `folder` (a profile's runs folder, or runs/interactive/): a list of
    (run folder, its config), in the order of their paths."""
    found = []
    for metrics in sorted(Path(folder).rglob("metrics.json")):
        config = metrics.parent / "config.json"
        if config.exists():
            found.append((metrics.parent, json.loads(config.read_text())))
    return found


def train_folder(config, run="", profile="default", root=None):
    """Where notebooks/train.ipynb puts its run when run_dir is not given: for a run of the grid
    (`run`), the profile's own folder if the run is finished there by this code (it is then reused,
    never written), else runs/interactive/<profile>/<run>; otherwise
    runs/interactive/<dataset>/<algorithm>_z<Nz>_ <protocol>_s<seed>-<hash of every other
    parameter>, so that other parameters get another folder."""
    import dataclasses

    from aevb.experiment import NOT_RECORDED
    from aevb.runs import code_hash, config_hash
    root = runs_root(root)
    if run:
        own = root / profile / run
        if finished(own) and json.loads(
            (own / "config.json").read_text()).get("code_hash") == code_hash():
            return own
        return root / INTERACTIVE / profile / run
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_RECORDED}
    named = grid.Run(config.dataset, config.algorithm, config.latent_dim, config.protocol,
                     config.seed).name  # the grid's naming of a run, '<dataset>/<run>'
    return root / INTERACTIVE / f"{named}-{config_hash(values)[:8]}"


def notebook_folders(notebook, profile, runs_dir="", figures_dir=""):
    """(runs folder, figures folder) of a figure notebook, from its parameters; refuses, before the
    notebook writes anything, an unknown profile, another profile's runs folder, and missing runs.

    runs_dir "": runs/<profile>. figures_dir "": figures/interactive/<profile> by hand, so that a
    notebook run outside make never writes into figures/<profile>/, the folder `make paper` owns
    (make passes it); one given by hand that is make's is written, with a loud warning. Relative
    paths are from the repository root, whatever the working directory.
    """
    if profile not in grid.PROFILES:
        raise ValueError(
            f"profile={profile!r} is not known; expected one of {', '.join(grid.PROFILES)}")
    runs_root = resolve(runs_dir) if runs_dir else paths.ROOT / "runs" / profile
    for other in grid.PROFILES:
        if other != profile and runs_root.resolve() == (paths.ROOT / "runs" / other).resolve():
            raise ValueError(
                f"runs_dir={runs_dir!r} holds the {other} profile's runs, but profile={profile!r}: "
                f"set profile={other!r} alone (runs_dir and figures_dir follow from it)")
    by_make = "MAKELEVEL" in os.environ
    figures_root = resolve(
        figures_dir) if figures_dir else paths.ROOT / "figures" / INTERACTIVE / profile
    owned = [
        p for p in grid.PROFILES
        if figures_root.resolve() == (paths.ROOT / "figures" / p).resolve()
    ]
    needed = grid.notebook_runs(notebook, profile=profile)
    missing = [r.name for r in needed if not finished(r.folder(runs_root))]
    if missing:
        elsewhere = [
            p for p in grid.PROFILES if p != profile and all(
                finished(r.folder(paths.ROOT / "runs" / p))
                for r in grid.notebook_runs(notebook, profile=p))
        ]
        where = (
            f"Every run it reads is finished in profile {', '.join(repr(p) for p in elsewhere)}: "
            "set "
            f"profile={elsewhere[0]!r}."
            if elsewhere else "No profile has all of its runs finished.")
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise FileNotFoundError(
            f"{notebook} reads {len(needed)} runs of the {profile} profile; {len(missing)} are not "
            "finished in "
            f"{runs_root}: {', '.join(missing[:6])}{more}. {where} To train them: make runs "
            f"PROFILE={profile}. "
            "Nothing was written.")
    if owned and not by_make:
        print(
            f"WARNING: {notebook} writes into {figures_root}, the {owned[0]} profile's figures "
            "folder that "
            "`make paper` owns (make results reads it); leave figures_dir empty to write into "
            f"{paths.ROOT / 'figures' / INTERACTIVE / profile} instead.", file=sys.stderr,
            flush=True)
    elif not by_make:
        print(
            f"{notebook}: the {profile} profile's runs from {runs_root}; figures into "
            f"{figures_root}"
        )
    return runs_root, figures_root


def grid_runs(runs_folder, profile="default", seed=1, **filters):
    """One seed of each run of the grid that matches `filters` (aevb.grid.runs'), loaded from
    `runs_folder` (a profile's runs folder): a dict keyed (dataset, algorithm, Nz)."""
    from aevb.runs import load_run
    return {(r.dataset, r.algorithm, r.latent_dim): load_run(r.folder(runs_folder))
            for r in grid.runs(seed=seed, profile=profile, **filters)}


def protocol_summary(runs):
    """One line saying how these runs trained, read from their configs and metrics (the step size
    is the one they trained with, the rule's choice where the rule chose it); a field on which the
    runs differ lists each of its values."""
    from aevb.experiment import DEFAULTS  # a run's config records only what differs from them
    configs = [{**DEFAULTS, **r["config"], "lr": r["metrics"]["lr"]}
               for r in runs]
    if not configs:
        raise ValueError("protocol_summary needs at least one run")

    def values(key):
        return "/".join(sorted({str(c[key]) for c in configs}))
    samples = "/".join(f"{s:,}" for s in sorted({c["samples"] for c in configs}))
    pixels = f", binarize {values('binarize')}" if configs[0]["dataset"] == "mnist" else ""
    return (f"{values('protocol')} protocol: {values('optimizer')} lr {values('lr')}, hidden "
            f"{values('hidden')}, weight prior {values('weight_prior')}{pixels}, recognition model "
            f"{values('recognition')}, minibatches {values('minibatches')}, {samples} training "
            "samples")


def test_bound_course(run):
    """A run's test bound over its training, in a row: where it peaked, where it ended, and how far
    below its peak it ended (negative: it fell), beside the configuration that explains it."""
    from aevb.experiment import DEFAULTS
    history = run["history"]
    if not history:
        raise ValueError(f"{run.get('name', 'this run')} has no history")
    peak = max(history, key=lambda h: h["test_elbo"])
    end = history[-1]
    c = {**DEFAULTS, **run["config"]}
    return {"dataset": c["dataset"], "Nz": c["latent_dim"], "protocol": c["protocol"],
            "seed": c["seed"], "recognition model": c["recognition"],
            "minibatches": c["minibatches"], "lr": run["metrics"]["lr"],
            "samples": run["metrics"]["samples"],
            "peak test bound": peak["test_elbo"], "at samples": int(peak["samples"]),
            "final test bound": end["test_elbo"],
            "fall from the peak": end["test_elbo"] - peak["test_elbo"],
            "final test KL": end["test_kl"]}
