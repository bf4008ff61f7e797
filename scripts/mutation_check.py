"""Mutation check: does the fast test tier notice when a behaviour a result depends on is switched off?

Each mutant below is a small edit to the project's source that switches one behaviour off (the sleep
phase's loss zeroed, the running terms not accumulated, dynamic binarization off, ...). For each, the
project is copied to a scratch folder, the edit is applied there (never to the working copy), and the
fast tier (`pytest -m "not slow" -x`, with PYTHONPATH at the copy) runs on the copy; the mutant is
caught when a test fails. The report names, for each mutant, the first test that failed, and the
unmutated copy is run first: it must pass, or the check means nothing.

    python scripts/mutation_check.py [--only NAME ...] [--out FILE] [--keep]

--only: the mutants to run (default: all); --out: also write the report (Markdown) to FILE; --keep:
leave the scratch folders (printed) for inspection. It exits 1 when a mutant survives. It takes
several minutes (one fast tier per mutant, stopped at the first failure; the test files most likely
to fail run first), so it is a tool, not part of `make test`. The data come from $VAE_DATA_DIR (or
the project's data/ folder), as for the tests.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("Makefile", "pyproject.toml", "requirements.txt", "published_numbers.csv", "vae_core.py", "aevb",
          "notebooks", "scripts", "tests", "bench")
# The fast tier's files, those that pin the behaviours first (pytest runs each file once).
FIRST = ("tests/test_behaviours.py", "tests/test_refusals.py", "tests/test_scorecard.py", "tests/test_grid.py",
         "tests/test_vae_core.py", "tests/test_mcem.py", "tests/test_estimators.py")

# name -> (what is switched off, [(file, text, replacement), ...]); each text must occur exactly once.
MUTANTS = {
    "sleep-phase-off": ("wake-sleep's sleep phase: its loss zeroed", [
        ("vae_core.py", "self.update(opt, wake_loss + sleep_loss)", "self.update(opt, wake_loss + 0 * sleep_loss)")]),
    "running-terms-not-accumulated": ("the running terms: only the last step's sums kept", [
        ("vae_core.py", "                sums[key] += value\n", "                sums[key] = value\n")]),
    "running-elbo-kl-sign": ("the running ELBO: KL added instead of subtracted", [
        ("vae_core.py", '"running_elbo": (sums["log p(x|z)"] - sums["KL"])', '"running_elbo": (sums["log p(x|z)"] + sums["KL"])')]),
    "dynamic-binarization-off": ("dynamic binarization of the minibatches", [
        ("vae_core.py", "step(opt, bernoulli(xb) if dynamic_binarization else xb, idx)", "step(opt, xb, idx)")]),
    "dynamic-binarization-once": ("dynamic binarization: one draw for the whole run instead of one per visit", [
        ("vae_core.py", "step(opt, bernoulli(xb) if dynamic_binarization else xb, idx)", "step(opt, xb, idx)"),
        ("vae_core.py", "    train_x = train_x.to(device)\n",
         "    train_x = train_x.to(device)\n    train_x = bernoulli(train_x) if dynamic_binarization else train_x\n")]),
    "train-evaluation-not-binarized": ("the fixed binarized draw of the training set for its bound", [
        ("vae_core.py", '        eval_sets["train"] = torch.bernoulli(eval_sets["train"], generator=torch.Generator(device).manual_seed(seed))',
         "        pass")]),
    "weight-prior-off": ("the weight prior", [
        ("vae_core.py", "1.0 / n_train if weight_prior else 0.0", "0.0")]),
    "weight-prior-wrong-scale": ("the weight prior's 1/N (here 1/batch_size)", [
        ("vae_core.py", "1.0 / n_train if weight_prior else 0.0", "1.0 / batch_size if weight_prior else 0.0")]),
    "iwae-k1": ("IWAE's k: its step uses one sample", [
        ("vae_core.py", "bound = iwae_bound(self.model, xb, self.n_samples)", "bound = iwae_bound(self.model, xb, 1)")]),
    "mcem-chains-sorted": ("MCEM's chains: read in sorted index order, not the minibatch's", [
        ("vae_core.py", 'hmc(log_joint, self.chains["z"][idx], self.chains["step_size"][idx],',
         'hmc(log_joint, self.chains["z"][idx.sort().values], self.chains["step_size"][idx.sort().values],')]),
    "mcem-chains-first-rows": ("MCEM's chains: written back to the first rows", [
        ("vae_core.py", 'self.chains["z"][idx], self.chains["step_size"][idx], self.chains["accept_prob"][idx] = z,',
         'self.chains["z"][:len(idx)], self.chains["step_size"][:len(idx)], self.chains["accept_prob"][:len(idx)] = z,')]),
    "hmc-estimator-ignores-states": ("the HMC estimator's given chain states", [
        ("aevb/estimators.py", "            if z_init is None:\n", "            if True:\n")]),
    "adagrad-warmup-off": ("the optimizer's warm-up", [
        ("vae_core.py", "return float(i >= warmup_steps) * decay", "return decay")]),
    "resume-ignored": ("resuming from a checkpoint (a restart instead)", [
        ("vae_core.py", "        run = checkpoint.resume(parts, run, device)", "        pass")]),
    "smoke-warmup-100": ("the smoke profile's short warm-up (back to Kingma's 100 minibatches)", [
        ("aevb/grid.py", "SMOKE_ADAGRAD = dict(warmup_steps=5, lr_trial_samples=1000)",
         "SMOKE_ADAGRAD = dict(lr_trial_samples=1000)")]),
    "scorecard-tolerance-strict": ("the scorecard's 'within the tolerance' (<=) made strict", [
        ("aevb/scorecard.py", "abs(out[\"difference\"]) <= tolerance_of(row)", "abs(out[\"difference\"]) < tolerance_of(row)")]),
    "scorecard-largest-budget": ("the scorecard's smallest budget of the seeds (max instead of min)", [
        ("aevb/scorecard.py", 'trained = min(finished[run]["metrics"]["samples"] for run in used)',
         'trained = max(finished[run]["metrics"]["samples"] for run in used)')]),
    "estimator-k-unchecked": ("the estimators' refusal of k < 1", [
        ("aevb/estimators.py", "    if k < 1:\n        raise ValueError(f\"need k >= 1 importance samples (got k={k})\")\n"
         "    device = next(model.parameters()).device\n    n_points = max(1, min(len(x), max_elements // model.x_dim))",
         "    device = next(model.parameters()).device\n    n_points = max(1, min(len(x), max_elements // model.x_dim))")]),
}


def copy_project(dest):
    dest.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        elif source.exists():
            shutil.copy2(source, dest / name)


def apply(dest, edits):
    for name, text, replacement in edits:
        path = dest / name
        source = path.read_text()
        if source.count(text) != 1:
            raise SystemExit(f"mutation_check: {name} holds {source.count(text)} copies of {text!r}, not one: "
                             "update the mutant to the code")
        path.write_text(source.replace(text, replacement))


def fast_tier(dest):
    """(passed, first failing test or '', seconds) of the fast tier on the copy in dest."""
    tests = [*FIRST, *sorted(p.relative_to(dest).as_posix() for p in (dest / "tests").glob("test_*.py")
                             if p.relative_to(dest).as_posix() not in FIRST)]
    env = {**os.environ, "PYTHONPATH": str(dest), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "VAE_DATA_DIR": os.environ.get("VAE_DATA_DIR") or str(ROOT / "data")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider",
                             *tests], cwd=dest, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    if result.returncode not in (0, 1):  # 1: tests failed; anything else is a broken run, shown in full
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
    return result.returncode == 0, (failed[0] if failed else f"pytest exit {result.returncode}"), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(MUTANTS), help="run these mutants alone")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="mutation_check-"))
    lines = ["| mutant | switched off | caught | by the test | seconds |", "|---|---|---|---|---|"]
    survivors = []
    try:
        baseline = scratch / "unmutated"
        copy_project(baseline)
        passed, failure, seconds = fast_tier(baseline)
        print(f"unmutated copy: {'passes' if passed else 'FAILS (' + failure + ')'} in {seconds:.0f}s", flush=True)
        if not passed:
            raise SystemExit("mutation_check: the unmutated project fails its fast tier, so no mutant can be judged")
        for name in args.only or MUTANTS:
            what, edits = MUTANTS[name]
            dest = scratch / name
            copy_project(dest)
            apply(dest, edits)
            passed, failure, seconds = fast_tier(dest)
            if passed:
                survivors.append(name)
            line = f"| {name} | {what} | {'no' if passed else 'yes'} | {'' if passed else failure} | {seconds:.0f} |"
            print(line, flush=True)
            lines.append(line)
            if not args.keep:
                shutil.rmtree(dest)
    finally:
        if args.keep:
            print(f"scratch folders in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report = "\n".join(lines) + f"\n\n{len(lines) - 2 - len(survivors)} of {len(lines) - 2} mutants caught" + \
        (f"; survived: {', '.join(survivors)}" if survivors else "") + "\n"
    print("\n" + report)
    if args.out:
        sys.path.insert(0, str(ROOT))
        from aevb.files import atomic_write_text
        atomic_write_text(args.out, report)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
