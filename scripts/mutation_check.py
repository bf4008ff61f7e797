"""Mutation check: does the fast test tier notice when a behaviour a result depends on is switched
off?

Each mutant below is a small edit to the project's source that switches one behaviour off (the sleep
phase's loss zeroed, the running terms not accumulated, dynamic binarization off, ...). For each,
the project is copied to a scratch folder, the edit is applied there (never to the working copy),
and the fast tier (`pytest -m "not slow" -x`, with PYTHONPATH at the copy) runs on the copy; the
mutant is caught when a test fails. The report names, for each mutant, the first test that failed,
and the unmutated copy is run first: it must pass, or the check means nothing.

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
COPIED = ("Makefile", "pyproject.toml", "requirements.txt", "environment.yml",
          "published_numbers.csv", "vae_core", "aevb", "notebooks", "scripts", "tests", "bench")
# The fast tier's files, those that pin the behaviours first (pytest runs each file once).
FIRST = ("tests/test_wiring.py", "tests/test_behaviours.py", "tests/test_refusals.py",
         "tests/test_scorecard.py", "tests/test_findings.py", "tests/test_estimators.py",
         "tests/test_grid.py", "tests/test_vae_core.py", "tests/test_mcem.py",
         "tests/test_protocols.py", "tests/test_data.py", "tests/test_golden.py")

# The tests that read the code's text, not its behaviour (a mutant's edit can lengthen a line past
# the linter's limit, and removes its own text): a mutant they alone would catch is not caught.
ABOUT_THE_TEXT = (
    "tests/test_structure.py::test_the_code_passes_the_linter",
    "tests/test_structure.py::test_every_mutant_of_the_mutation_check_still_applies")

# name -> (what is switched off, [(file, text, replacement), ...]); each text must occur exactly
# once.
MUTANTS = {
    "sleep-phase-off": ("wake-sleep's sleep phase: its loss zeroed",
                        [("vae_core/algorithms.py", "self.update(opt, wake_loss + sleep_loss)",
                          "self.update(opt, wake_loss + 0 * sleep_loss)")]),
    "running-terms-not-accumulated": ("the running terms: only the last step's sums kept", [
        ("vae_core/training.py", "                sums[key] += value\n",
         "                sums[key] = value\n")
    ]),
    "running-elbo-kl-sign": ("the running ELBO: KL added instead of subtracted", [
        ("vae_core/algorithms.py", '"running_elbo": (sums["log p(x|z)"] - sums["KL"])',
         '"running_elbo": (sums["log p(x|z)"] + sums["KL"])')
    ]),
    "dynamic-binarization-off": ("dynamic binarization of the minibatches", [
        ("vae_core/training.py", "step(opt, bernoulli(xb) if dynamic_binarization else xb, idx)",
         "step(opt, xb, idx)")
    ]),
    "dynamic-binarization-once": (
        "dynamic binarization: one draw for the whole run instead of one per visit",
        [("vae_core/training.py", "step(opt, bernoulli(xb) if dynamic_binarization else xb, idx)",
          "step(opt, xb, idx)"),
         ("vae_core/training.py", "    train_x = train_x.to(device)\n",
          "    train_x = train_x.to(device)\n    train_x = bernoulli(train_x) if "
          "dynamic_binarization else train_x\n"
          )]),
    "train-evaluation-not-binarized": (
        "the fixed binarized draw of the training set for its bound", [
            ("vae_core/training.py",
             '        sets["train"] = torch.bernoulli(sets["train"], generator=generator)',
             "        pass")
        ]),
    "weight-prior-off": ("the weight prior", [
        ("vae_core/training.py", "lr, weight_prior / n_train, device,", "lr, 0.0, device,")
    ]),
    "weight-prior-wrong-scale": ("the weight prior's 1/N (here 1/batch_size)",
                                 [("vae_core/training.py", "lr, weight_prior / n_train, device,",
                                   "lr, weight_prior / batch_size, device,")]),
    "iwae-k1": ("IWAE's k: its step uses one sample",
                [("vae_core/algorithms.py", "bound = iwae_bound(self.model, xb, self.n_samples)",
                  "bound = iwae_bound(self.model, xb, 1)")]),
    "mcem-chains-sorted": ("MCEM's chains: read in sorted index order, not the minibatch's",
                           [("vae_core/algorithms.py", 'self.chains["z"][idx],\n',
                             'self.chains["z"][idx.sort().values],\n'),
                            ("vae_core/algorithms.py", 'self.chains["step_size"][idx],\n',
                             'self.chains["step_size"][idx.sort().values],\n')]),
    "mcem-chains-first-rows": ("MCEM's chains: written back to the first rows", [
        ("vae_core/algorithms.py", 'self.chains["z"][idx] = z\n',
         'self.chains["z"][:len(idx)] = z\n'),
        ("vae_core/algorithms.py", 'self.chains["accept_prob"][idx] = accept\n',
         'self.chains["accept_prob"][:len(idx)] = accept\n'),
        ("vae_core/algorithms.py", 'self.chains["step_size"][idx] = step_size\n',
         'self.chains["step_size"][:len(idx)] = step_size\n')
    ]),
    "hmc-estimator-ignores-states": ("the HMC estimator's given chain states", [
        ("aevb/estimators.py", "            if z_init is None:\n", "            if True:\n")
    ]),
    "adagrad-warmup-off": ("the optimizer's warm-up", [
        ("vae_core/training.py", "return float(i >= warmup_steps) * decay", "return decay")
    ]),
    "resume-ignored": ("resuming from a checkpoint (a restart instead)",
                       [("vae_core/training.py",
                         "        run = checkpoint.resume(parts, run, device)", "        pass")]),
    "smoke-warmup-100": ("the smoke profile's short warm-up (back to Kingma's 100 minibatches)", [
        ("aevb/grid.py", "SMOKE_ADAGRAD = dict(warmup_steps=5, lr_trial_samples=1000)",
         "SMOKE_ADAGRAD = dict(lr_trial_samples=1000)")
    ]),
    "scorecard-tolerance-strict": ("the scorecard's 'within the tolerance' (<=) made strict", [
        ("aevb/scorecard.py", "margin(out[\"difference\"], tolerance_of(row)) >= 0",
         "margin(out[\"difference\"], tolerance_of(row)) > 0")
    ]),
    "scorecard-largest-budget": (
        "the scorecard's smallest budget of the seeds (max instead of min)",
        [("aevb/scorecard.py", 'trained = min(finished[run]["metrics"]["samples"] for run in used)',
          'trained = max(finished[run]["metrics"]["samples"] for run in used)')]),
    "estimator-k-unchecked": ("the estimators' refusal of k < 1", [(
        "aevb/estimators.py",
        "    if k < 1:\n        raise ValueError(f\"need k >= 1 importance samples (got k={k})\")\n"
        "    device = next(model.parameters()).device\n    n_points = max(1, min(len(x), "
        "max_elements // model.x_dim))",
        "    device = next(model.parameters()).device\n    n_points = max(1, min(len(x), "
        "max_elements // model.x_dim))"
    )]),
    # ---- the wiring: what a run's parameters reach (aevb/experiment.py)
    "chosen-lr-not-trained": ("the step size Kingma's rule chose: the config's lr trained instead",
                              [("aevb/experiment.py", "samples=c.samples, lr=lr, eval_at=eval_at",
                                "samples=c.samples, lr=c.lr, eval_at=eval_at")]),
    "trial-samples-ignored": ("the step-size trials' length (lr_trial_samples)",
                              [("aevb/experiment.py", "c.lr_choices, c.lr_trial_samples,",
                                "c.lr_choices, 50_000,")]),
    "batch-0-not-the-training-set": (
        "batch_size 0 as the whole training set (batch MCEM): 100 instead", [
            ("aevb/experiment.py", "batch_size = c.batch_size or len(train_x)",
             "batch_size = c.batch_size or 100")
        ]),
    "adam-eps-not-passed": ("the protocol's Adam eps handed to train", [
        ("aevb/experiment.py", "lr_schedule=c.lr_schedule, adam_eps=c.adam_eps,",
         "lr_schedule=c.lr_schedule,")
    ]),
    "schedule-not-passed": ("the protocol's learning-rate schedule handed to train", [
        ("aevb/experiment.py", "lr_schedule=c.lr_schedule, adam_eps=c.adam_eps,",
         'lr_schedule="constant", adam_eps=c.adam_eps,')
    ]),
    "warmup-not-passed": ("the protocol's warm-up handed to train",
                          [("aevb/experiment.py", "warmup_steps=c.warmup_steps, seed=c.seed",
                            "warmup_steps=0, seed=c.seed")]),
    "weight-prior-not-passed": ("the protocol's weight prior handed to train", [
        ("aevb/experiment.py", "weight_prior=c.weight_prior,", "weight_prior=False,")
    ]),
    "dynamic-binarization-not-passed": ("dynamic binarization handed to train", [
        ("aevb/experiment.py", 'dynamic_binarization=c.binarize == "dynamic",\n',
         "dynamic_binarization=False,\n")
    ]),
    "pixel-scale-not-passed": ("the protocol's pixel scale handed to the training set's loader", [
        ("aevb/experiment.py",
         'data.load(config.dataset, "train", config.binarize, pixel_scale=config.pixel_scale)',
         'data.load(config.dataset, "train", config.binarize)')
    ]),
    "test-size-ignored": ("the run's test_size (the first points of the test set)",
                          [("aevb/experiment.py", "test_x[:config.test_size or None], likelihood",
                            "test_x, likelihood")]),
    "appd-chains-from-the-prior": (
        "App. D's chains after training started from the encoder (from the prior instead)",
        [("aevb/experiment.py",
          "                z_init = estimators.encoder_sample(model, points, seed=c.seed)\n",
          "                pass\n")]),
    "fig3-mcem-chains-ignored": (
        "Figure 3's App. D chains of MCEM's training points started from its own chains", [
            ("aevb/experiment.py", 'z_init = state["chains"]["z"][:len(x)]', "z_init = None")
        ]),
    "is-k-not-passed": ("the test log-likelihood's k (is_k)",
                        [("aevb/experiment.py", "estimate(model, test_x[:c.is_points], k=c.is_k)",
                          "estimate(model, test_x[:c.is_points])")]),
    "mcem-estimated-with-an-encoder": (
        "MCEM's encoder-free estimator (IS with its unused encoder instead)",
        [("aevb/experiment.py",
          'return estimators.log_likelihood_hmc if algorithm == "mcem" else '
          'estimators.log_likelihood',
          "return estimators.log_likelihood")]),
    "kingma-warmup-100": ("Kingma's warm-up of 101 minibatches (100 instead)", [
        ("aevb/grid.py",
         'dict(optimizer="adagrad", weight_prior=True, warmup_steps=101, pixel_scale=256)',
         'dict(optimizer="adagrad", weight_prior=True, warmup_steps=100, pixel_scale=256)')
    ]),
    "burda-eps-on-the-mean": (
        "Burda's eps on the summed gradient (1e-4 on the mean instead of 1e-4 / 20)", [
            ("aevb/grid.py", 'adam_eps=1e-4 / 20, lr_schedule="burda"',
             'adam_eps=1e-4, lr_schedule="burda"')
        ]),
    # ---- the optimizers' settings and the schedule (vae_core/training.py)
    "adam-eps-ignored": ("Adam's eps (torch's default instead)", [
        ("vae_core/training.py", "torch.optim.Adam(params, lr=lr, eps=adam_eps, fused=True)",
         "torch.optim.Adam(params, lr=lr, fused=True)")
    ]),
    "adam-betas": ("Adam's beta2 = 0.999 (0.99 instead)", [
        ("vae_core/training.py", "torch.optim.Adam(params, lr=lr, eps=adam_eps, fused=True)",
         "torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=adam_eps, fused=True)")
    ]),
    "adagrad-lr-decay": ("Adagrad without a decay of its rate",
                         [("vae_core/training.py", "torch.optim.Adagrad(params, lr=lr, fused=",
                           "torch.optim.Adagrad(params, lr=lr, lr_decay=1e-3, fused=")]),
    "weight-decay-on-biases": ("the weight prior on the weight matrices alone (on the biases too)",
                               [("vae_core/training.py", '"weight_decay": weight_decay * decay}',
                                 '"weight_decay": weight_decay}')]),
    "burda-tenth-every-8-stages": ("Burda's rate 0.001 * 10^(-i/7) (10^(-i/8) instead)", [
        ("vae_core/training.py", "10 ** (-burda_stage(i // steps_per_epoch) / 7)",
         "10 ** (-burda_stage(i // steps_per_epoch) / 8)")
    ]),
    "burda-stages-in-steps": ("Burda's stages counted in passes (in minibatches instead)", [
        ("vae_core/training.py", "10 ** (-burda_stage(i // steps_per_epoch) / 7)",
         "10 ** (-burda_stage(i) / 7)")
    ]),
    "warmup-one-longer": ("the warm-up's length (one minibatch more)",
                          [("vae_core/training.py", "return float(i >= warmup_steps) * decay",
                            "return float(i > warmup_steps) * decay")]),
    # ---- the estimators' normalisation at small k
    "iwae-bound-unnormalised": ("IWAE's 1/k", [
        ("vae_core/model.py", "return torch.logsumexp(log_w, 0) - math.log(k)",
         "return torch.logsumexp(log_w, 0)")
    ]),
    "is-normalised-by-k-minus-1": ("the IS estimator's 1/k (1/(k-1) instead)", [(
        "aevb/estimators.py",
        "dim=0))\n            out.append((log_sum_w - math.log(k)).cpu())\n    return "
        "torch.cat(out)\n\n\ndef log_likelihood_hmc",
        "dim=0))\n            out.append((log_sum_w - math.log(max(k - 1, 1))).cpu())\n    return "
        "torch.cat(out)\n\n\ndef log_likelihood_hmc"
    )]),
    "is-chunks-not-combined": (
        "the IS estimator's running logsumexp over chunks of draws (the last chunk alone)",
        [("aevb/estimators.py",
          "\n                log_sum_w = torch.logaddexp(log_sum_w, "
          "torch.logsumexp(log_w.double(), dim=0))",
          "\n                log_sum_w = torch.logsumexp(log_w.double(), dim=0) + math.log(k / "
          "len(log_w))"
          )]),
    # ---- the loaders (aevb/data.py)
    "mnist-pixel-scale-ignored": ("MNIST's pixel scale (always / 255)", [
        ("aevb/data.py", "x = images.float() / pixel_scale", "x = images.float() / 255")
    ]),
    "frey-pixel-scale-ignored": ("Frey Face's pixel scale (always / 255)", [
        ("aevb/data.py", '["ff"].T.copy()).float() / pixel_scale', '["ff"].T.copy()).float() / 255')
    ]),
    "binarized-test-set-redrawn": (
        "the fixed draw of the dynamically binarized test set (a new draw each load)", [
            ("aevb/data.py", "x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))",
             "x = torch.bernoulli(x)")
        ]),
    "dynamic-train-set-binarized-once": (
        "the grey training set of dynamic binarization (binarized once at loading)", [
            ("aevb/data.py", 'if binarize == "dynamic" and split != "train":',
             'if binarize == "dynamic":')
        ]),
    "frey-split-unshuffled": ("Frey Face's random test frames (the last 200 of the video instead)",
                              [("aevb/data.py", "return x[order[:-FREY_N_TEST]]",
                                "return x[:-FREY_N_TEST]"),
                               ("aevb/data.py", "return x[order[-FREY_N_TEST:]]",
                                "return x[-FREY_N_TEST:]")]),
    # ---- the claims and verdicts (aevb/scorecard.py)
    "claim1-one-sided": ("claim 1's gap judged in both signs (only above)",
                         [("aevb/scorecard.py", "abs(worst) <= tolerance_of(row), gaps_text(by_nz)",
                           "worst <= tolerance_of(row), gaps_text(by_nz)")]),
    "claim1-smallest-gap": ("claim 1's largest gap over Nz (the smallest instead)",
                            [("aevb/scorecard.py", "worst = max(by_nz.values(), key=abs)",
                              "worst = min(by_nz.values(), key=abs)")]),
    "claim2-one-sided": ("claim 2's tolerance in both signs (only above)",
                         [("aevb/scorecard.py", 'abs(mean - row["published"]) <= tolerance_of(row)',
                           'mean - row["published"] <= tolerance_of(row)')]),
    "claim3-threshold-zero": ("claim 3's threshold (above 0 instead of above the tolerance)", [
        ("aevb/scorecard.py", "statistics.mean(gaps.values()) > tolerance_of(row), \"\"",
         "statistics.mean(gaps.values()) > 0, \"\"")
    ]),
    "aevb-beats-ws-largest-gap": (
        "'AEVB beats wake-sleep at every Nz' judged on its smallest gap (the largest instead)", [
            ("aevb/scorecard.py", "smallest = min(by_nz.values())",
             "smallest = max(by_nz.values())")
        ]),
    "better-by-unoriented": ("better_by's orientation (a loss's difference not negated)", [
        ("aevb/scorecard.py", 'out["better_by"] = direction(row["metric"]) * out["difference"]',
         'out["better_by"] = out["difference"]')
    ]),
    "judged-ratio-unsigned": ("judged_differences' signed ratio (its size alone)", [
        ("aevb/scorecard.py", "ratio=better * judged.in_tolerances.astype(float).abs()",
         "ratio=judged.in_tolerances.astype(float).abs()")]),
    # ---- the findings' words (aevb/findings.py)
    "compare-ignores-orientation": ("compare's side for a loss (lower is ahead)", [
        ("aevb/findings.py",
         'return "ahead of" if diff * (1 if higher_is_better else -1) > 0 else "behind"',
         'return "ahead of" if diff > 0 else "behind"')
    ]),
    "compare-tolerance-strict": ("compare's 'within the tolerance' at the tolerance itself", [
        ("aevb/findings.py", "not missing(tolerance) and margin(diff, tolerance) >= 0:",
         "not missing(tolerance) and margin(diff, tolerance) > 0:")
    ]),
    "versus-ignores-orientation": ("versus's orientation (a loss's lower value ahead)", [
        ("aevb/findings.py", "diff = (a - b) * (1 if higher_is_better else -1)", "diff = a - b")
    ]),
    "moves-words-swapped": ("moves' raises/lowers",
                            [("aevb/findings.py", "{'raises' if diff > 0 else 'lowers'}",
                              "{'raises' if diff < 0 else 'lowers'}")]),
}


def copy_project(dest):
    dest.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        elif source.exists():
            shutil.copy2(source, dest / name)


def apply(dest, edits):
    for name, text, replacement in edits:
        path = dest / name
        source = path.read_text()
        if source.count(text) != 1:
            raise SystemExit(
                f"mutation_check: {name} holds {source.count(text)} copies of {text!r}, not one: "
                "update the mutant to the code")
        path.write_text(source.replace(text, replacement))


def fast_tier(dest):
    """(passed, first failing test or '', seconds) of the fast tier on the copy in dest."""
    tests = [
        *FIRST, *sorted(
            p.relative_to(dest).as_posix() for p in (dest / "tests").glob("test_*.py")
            if p.relative_to(dest).as_posix() not in FIRST)
    ]
    env = {
        **os.environ, "PYTHONPATH": str(dest),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "VAE_DATA_DIR": os.environ.get("VAE_DATA_DIR") or str(ROOT / "data")
    }
    start = time.perf_counter()
    result = subprocess.run([
        sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider",
        *[f"--deselect={test}" for test in ABOUT_THE_TEXT], *tests
    ], cwd=dest, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    # 1: tests failed; anything else is a broken run, shown in full
    if result.returncode not in (0, 1):
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
    return result.returncode == 0, (failed[0]
                                    if failed else f"pytest exit {result.returncode}"), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(MUTANTS),
                        help="run these mutants alone")
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
        print(
            f"unmutated copy: {'passes' if passed else 'FAILS (' + failure + ')'} "
            f"in {seconds:.0f}s",
            flush=True)
        if not passed:
            raise SystemExit(
                "mutation_check: the unmutated project fails its fast tier, so no mutant can be "
                "judged"
            )
        for name in args.only or MUTANTS:
            what, edits = MUTANTS[name]
            dest = scratch / name
            copy_project(dest)
            apply(dest, edits)
            passed, failure, seconds = fast_tier(dest)
            if passed:
                survivors.append(name)
            line = (f"| {name} | {what} | {'no' if passed else 'yes'} | "
                    f"{'' if passed else failure} | {seconds:.0f} |")
            print(line, flush=True)
            lines.append(line)
            if not args.keep:
                shutil.rmtree(dest)
    finally:
        if args.keep:
            print(f"scratch folders in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    caught = len(lines) - 2 - len(survivors)
    report = ("\n".join(lines) + f"\n\n{caught} of {len(lines) - 2} mutants caught"
              + (f"; survived: {', '.join(survivors)}" if survivors else "") + "\n")
    print("\n" + report)
    if args.out:
        sys.path.insert(0, str(ROOT))
        from aevb.files import atomic_write_text
        atomic_write_text(args.out, report)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
