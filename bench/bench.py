"""Throughput of vae_core's loops on this machine, beside a pytorch/examples-style reference loop
and the matmul ceiling of the same layer shapes.

    python bench/bench.py [--quick] [--threads N] [--out bench/results.json]

For each model (the report's 784-500-20 and a 784-500-500-20 variant, tanh, Bernoulli decoder,
batch 100, L = 1) it times, median of REPEATS after a warm-up:
  1. reference       torchvision MNIST + ToTensor through a DataLoader (pytorch/examples
                     vae/main.py)
  2. tensor_loader   a DataLoader over a TensorDataset of the preloaded [60000, 784] tensor
  3. aevb            vae_core.train(..., "aevb")
  3b. aevb_kingma    vae_core.train(..., "aevb") with Kingma & Welling's Adagrad and weight prior
  3c. aevb_compiled  loop 3's step with aevb_loss under torch.compile (compile time apart)
  4. wake_sleep      vae_core.train(..., "wake_sleep")
  5. log_likelihood  aevb.estimators.log_likelihood (importance sampling), in datapoint-samples/s
                     (N * k per s)
For 3, 3b and 4 on the report's model it also profiles where a step's time goes: GEMMs (beside what
they would take at their rate alone), optimizer, everything else; and what a faster step could gain
at most (`headroom`: with no GEMM time, with the GEMMs at their bfloat16 rate alone, and the time
outside the GEMMs that TARGET times today's step needs).
Loops 1-3 make the same step (aevb_loss below, vae_core.make_optimizer's Adam): they differ only in
how batches are made. Writes results.json and results.md next to --out, atomically; CPU only.
"""
import argparse
import atexit
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets, transforms

import vae_core as vc
from aevb import estimators
from aevb.data import DATA_FILES, data_file, load_mnist
from aevb.files import atomic_write_text

# ---- settings: a full run takes a few minutes on 2 cores ----------------------------------------
# the report's model, and a deeper one
MODELS = {"784-500-20": (500,), "784-500-500-20": (500, 500)}
Z_DIM = 20  # Nz of the report's Table 1
BATCH = 100  # M in Kingma & Welling, and the report's batch size
N_SAMPLES = 1  # L, samples of z per datapoint
SAMPLES = 10_000  # training samples per timed repeat (100 steps)
WARMUP = 2_000  # training samples before timing: allocator, MKL kernel choice, Adam state
REPEATS = 5  # the median of these is reported
IS_POINTS = 100  # datapoints for the log-likelihood timing
IS_K = 1000  # importance samples per datapoint (the papers use 5000; the chunk shapes are the same)
GEMM_MIN_TIME = 0.05  # seconds per timing block of one GEMM shape in the ceiling
TARGET = 3  # the speed-up over today's step that `headroom` asks what it would take to reach
PAPER_SAMPLES = 10**8  # PROFILE=paper: Kingma & Welling's 10^8 training samples per run
QUICK = dict(SAMPLES=300, WARMUP=100, REPEATS=1, IS_POINTS=10, IS_K=20, GEMM_MIN_TIME=0.001)
QUICK_MODE = False

LOOPS = {  # key: what the table says
    "reference": "1 reference: MNIST+ToTensor DataLoader",
    "tensor_loader": "2 DataLoader(TensorDataset)",
    "aevb": "3 vae_core.train aevb",
    "aevb_kingma": "3b vae_core.train aevb, Adagrad + weight prior",
    "aevb_compiled": "3c as 3, aevb_loss under torch.compile",
    "wake_sleep": "4 vae_core.train wake_sleep",
    "log_likelihood": "5 aevb.estimators.log_likelihood (IS)",
}


# ---- loops: each is run(n) doing n units of work (training samples, or the whole IS evaluation) --

def aevb_loss(model, x, n_samples=1):
    """The AEVB step's loss (the negated mean SGVB estimate, VAE.elbo) and its detached terms."""
    elbo, log_px_given_z, kl = model.elbo(x, n_samples)
    return -elbo.mean(), log_px_given_z.detach(), kl.detach()


def reference_loop(model, dataset):
    """pytorch/examples vae/main.py's train(): per-item PIL -> ToTensor, default collate."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0)
    opt = vc.make_optimizer(model.named_parameters(), "adam", 1e-3, 0.0, torch.device("cpu"))

    def run(n):
        model.train()
        seen, train_loss = 0, 0.0
        for data, _ in loader:
            data = data.view(-1, 784)
            opt.zero_grad()
            loss, _, _ = aevb_loss(model, data, N_SAMPLES)
            loss.backward()
            train_loss += loss.item()  # as the reference does: one host read per step
            opt.step()
            seen += len(data)
            if seen >= n:
                break
    return run


def tensor_loader_loop(model, x):
    """The same step, batches from a DataLoader over the preloaded tensor (still per-item
    collate)."""
    loader = DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=True, num_workers=0)
    opt = vc.make_optimizer(model.named_parameters(), "adam", 1e-3, 0.0, torch.device("cpu"))

    def run(n):
        model.train()
        seen = 0
        for (data,) in loader:
            opt.zero_grad()
            loss, _, _ = aevb_loss(model, data, N_SAMPLES)
            loss.backward()
            opt.step()
            seen += len(data)
            if seen >= n:
                break
    return run


def vae_core_loop(model, x, algorithm, **options):
    # eval_at=[n] evaluates once, at the end, on eval_size=BATCH points: one forward pass of 100
    # points beside n / 100 training steps, so evaluation is negligible in the timing.
    def run(n):
        vc.train(model, x, algorithm, samples=n, batch_size=BATCH, n_samples=N_SAMPLES, eval_at=[n],
                 test_x=None, eval_size=BATCH, device="cpu", **options)
    return run


def compiled_loop(model, x):
    """Loop 3's step (index_select batches, fused Adam, metrics summed on the device) with
    aevb_loss under torch.compile, which fuses its elementwise operations and their backward.
    Its first call compiles; main times that apart."""
    opt = vc.make_optimizer(model.named_parameters(), "adam", 1e-3, 0.0, torch.device("cpu"))
    loss_fn = torch.compile(aevb_loss)
    sums = torch.zeros(2, dtype=torch.float64)

    def run(n):
        assert n <= len(x), "one shuffle per call"
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, n, BATCH):
            loss, log_px_given_z, kl = loss_fn(model, x.index_select(0, order[i:i + BATCH]),
                                               N_SAMPLES)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums.add_(torch.stack([log_px_given_z.sum(), kl.sum()]))
    return run


def log_likelihood_loop(model, x):
    def run(n):  # n is fixed by x and IS_K
        estimators.log_likelihood(model, x, k=IS_K)
    return run


def time_loop(run, units, warmup_units, repeats):
    run(warmup_units)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(units)
        seconds.append(time.perf_counter() - start)
    return seconds


# ---- FLOPs, counted analytically -----------------------------------------------------------------
# A GEMM is (layer, op, M, K, N, count) for a Linear layer W [N, K] (K inputs, N outputs) at batch
# M:   fwd: Y = X @ W^T   [M, K] x [K, N]
#   dX:  dX = dY @ W   [M, N] x [N, K]   (skipped when the layer's input needs no gradient)
#   dW:  dW = dY^T @ X [N, M] x [M, K]
# each 2*M*N*K FLOPs. Bias adds and gradients, activations, the loss and Adam are not counted: they
# are O(M*N), not O(M*N*K), and are exactly the overhead that separates a loop from its ceiling.

def linear_shapes(net):
    return [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]


def forward(layers, m, tag, count=1):
    return [(f"{tag}{i}", "fwd", m, k, n, count) for i, (k, n) in enumerate(layers)]


def backward(layers, m, tag, input_grad):
    gemms = []
    for i, (k, n) in enumerate(layers):
        gemms.append((f"{tag}{i}", "dW", m, k, n, 1))
        if i > 0 or input_grad:
            gemms.append((f"{tag}{i}", "dX", m, k, n, 1))
    return gemms


def aevb_gemms(enc, dec):
    """One AEVB step: x has no gradient, z does (reparameterization), so the decoder's first dX is
    needed."""
    m = BATCH * N_SAMPLES
    return forward(enc, BATCH, "enc") + forward(dec, m, "dec") + \
        backward(enc, BATCH, "enc", input_grad=False) + backward(dec, m, "dec", input_grad=True)


def wake_sleep_gemms(enc, dec):
    """One wake-sleep step as vae_core does it: wake encoder forward without grad, decoder forward
    and backward (z drawn without a gradient path: no first dX); sleep decoder forward to dream x,
    encoder forward and backward (the dream has no gradient path: no first dX)."""
    m = BATCH * N_SAMPLES
    wake = forward(enc, BATCH, "enc") + forward(dec, m, "dec") + backward(
        dec, m, "dec", input_grad=False)
    sleep = forward(dec, m, "dec") + forward(enc, m, "enc") + backward(
        enc, m, "enc", input_grad=False)
    return wake + sleep


def log_likelihood_gemms(enc, dec, n, k):
    """aevb.estimators.log_likelihood's chunks: encoder on each chunk of points, decoder on each
    chunk of draws (its chunk rule, copied here; max_elements read from its signature)."""
    max_elements = inspect.signature(estimators.log_likelihood).parameters["max_elements"].default
    x_dim = dec[-1][1]
    n_points = max(1, min(n, max_elements // x_dim))
    n_draws = max(1, min(k, max_elements // (n_points * x_dim)))
    shapes = Counter()
    for i in range(0, n, n_points):
        p = min(n_points, n - i)
        shapes[("enc", p)] += 1
        for j in range(0, k, n_draws):
            shapes[("dec", min(n_draws, k - j) * p)] += 1
    return [
        g for (tag, m), c in shapes.items()
        for g in forward(enc if tag == "enc" else dec, m, tag, c)
    ]


def gemm_flops(gemms):
    return sum(2 * m * k * n * c for _, _, m, k, n, c in gemms)


# ---- the matmul ceiling: each GEMM shape alone, same threads ------------------------------------

def gemm_gflops(op, m, k, n, min_time, repeats, dtype=torch.float32):
    """GFLOP/s of one GEMM shape: torch.mm into a preallocated output, median of `repeats`
    blocks; `dtype`: its inputs' and output's (bfloat16: what a lower-precision step's GEMMs could
    reach, its casts not counted)."""
    w = torch.randn(n, k, dtype=dtype)
    if op == "fwd":
        a, b = torch.randn(m, k, dtype=dtype), w.t()
    elif op == "dX":
        a, b = torch.randn(m, n, dtype=dtype), w
    else:
        a, b = torch.randn(m, n, dtype=dtype).t(), torch.randn(m, k, dtype=dtype)
    out = torch.empty(a.shape[0], b.shape[1], dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    reps = max(1, int(min_time / max(time.perf_counter() - start, 1e-7)))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        seconds.append((time.perf_counter() - start) / reps)
    return 2 * m * k * n / statistics.median(seconds) / 1e9


def ceiling(gemms, rates):
    """GFLOP/s if the loop did only its GEMMs, each at its measured rate."""
    seconds = sum(2 * m * k * n * c / (rates[(op, m, k, n)] * 1e9) for _, op, m, k, n, c in gemms)
    return gemm_flops(gemms) / seconds / 1e9


# ---- where a training step's time goes -----------------------------------------------------------
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def step_breakdown(run, units, warmup_units, gemms, rates, repeats):
    """Profile `units` training samples of a loop (after a warm-up), `repeats` times; of the median
    repeat, per step: the time in GEMMs, in the optimizer and in everything else (elementwise ops,
    autograd, Python), and the GEMMs' GFLOP/s in the step beside their rate alone (`ceiling`).
    The profiler's own cost lands mostly in 'other'."""
    from torch.profiler import ProfilerActivity, profile
    run(warmup_units)
    steps, gemm_flop = units / BATCH, gemm_flops(gemms) / BATCH * units
    alone = ceiling(gemms, rates)
    profiles = []
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(units)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6
        optimizer = sum(e.self_cpu_time_total for e in events
                        if "_fused_ada" in e.key or e.key.startswith("Optimizer.")) / 1e6
        profiles.append({
            "steps": steps, "ms_per_step": 1e3 * total / steps, "gemm_ms": 1e3 * gemm / steps,
            "optimizer_ms": 1e3 * optimizer / steps, "other_ms": 1e3 *
            (total - gemm - optimizer) / steps, "gemm_gflops_in_step": gemm_flop / gemm / 1e9,
            "gemm_gflops_alone": alone, "gemm_ms_alone": 1e3 * gemm_flop / alone / 1e9 / steps
        })
    return sorted(profiles, key=lambda p: p["ms_per_step"])[len(profiles) // 2]


def headroom(breakdown, gemms, rates_bf16, target=TARGET):
    """What a faster step can gain at most (Amdahl's law on a `step_breakdown`): the speed-up if
    its GEMMs took no time; its GEMMs' time at the bfloat16 rate of their shapes alone
    (`rates_bf16`, casts not counted) and the speed-up with them so and the rest as it is; and
    what the rest (optimizer, elementwise work, autograd, Python) must come down to for `target`
    times today's step with bfloat16 GEMMs (negative: out of reach even with no rest)."""
    ms, gemm_ms = breakdown["ms_per_step"], breakdown["gemm_ms"]
    rest = ms - gemm_ms
    # the step's GEMMs at the bfloat16 rate alone, scaled like the float32 ones are in the step
    bf16_ms = breakdown["gemm_ms_alone"] * breakdown["gemm_gflops_alone"] / ceiling(gemms,
                                                                                  rates_bf16)
    return {"rest_ms": rest, "speedup_if_gemms_free": ms / rest, "gemm_ms_bf16_alone": bf16_ms,
            "speedup_with_bf16_gemms": ms / (rest + bf16_ms), "target": target,
            "rest_ms_for_target": ms / target - bf16_ms}


def bf16_hardware():
    """The CPU's bfloat16 matrix instructions, from /proc/cpuinfo's flags ([] where none or
    unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted({f for f in line.split() if f in ("amx_bf16", "avx512_bf16")})
    except OSError:
        pass
    return []


# ---- report -------------------------------------------------------------------------------------

def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
            "mkl": torch.backends.mkl.is_available(), "python": platform.python_version(),
            "platform": platform.platform(), "bf16_hardware": bf16_hardware(),
            "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def markdown(results):
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}; "
        f"batch {BATCH}, L = {N_SAMPLES}, median of {results['settings']['repeats']} repeats.", "",
        "| model | loop | unit | samples/s | x loop 1 | GFLOP/s | ceiling GFLOP/s | % of ceiling |",
        "|---|---|---|---:|---:|---:|---:|---:|"
    ]
    for name, model in results["models"].items():
        for key, r in model["loops"].items():
            lines.append(
                f"| {name} | {LOOPS[key]} | {r['unit']} | {r['samples_per_s']:,.0f} | "
                f"{r['ratio_to_reference']:.2f} | {r['gflops']:.1f} | {r['ceiling_gflops']:.1f} | "
                f"{100 * r['fraction_of_ceiling']:.0f}% |")
    compiled = [f"{c:.1f} s ({name})" for name, model in results["models"].items()
                if (c := model.get("compile_seconds")) is not None]
    if compiled:
        lines += [
            "",
            f"3c's first step compiles, outside its timing: {', '.join(compiled)}, once per run "
            "(a model after the first reuses the kernels they share)."
        ]
    if "compile_error" in results:
        lines += [
            "", f"3c not timed: torch.compile failed here ({results['compile_error'][:200]})."
        ]
    lines += [
        "", "Training samples are datapoints; IS samples are datapoint-samples (N * k), so its "
        "'x loop 1' compares unlike units. "
        "GFLOP/s counts only the GEMMs (2*M*N*K each; forward, and backward where taken); the "
        "ceiling "
        "is the same GEMMs timed alone at the same shapes and threads.", "",
        "Whole-machine AEVB throughput (784-500-20) with N concurrent training jobs, as `make -j "
        "N` runs them:"
    ]
    for r in results["parallel_jobs"].values():
        lines.append(
            f"- {r['jobs']} job(s) x {r['threads_per_job']} thread(s): {r['samples_per_s']:,.0f} "
            "samples/s"
        )
    lines += [
        "",
        "Where a step's time goes (784-500-20, batch 100, under torch.profiler, whose own cost is "
        "mostly in 'other'; the median of the repeats). 'If at their rate alone': the same GEMMs "
        "at the rates of the ceiling.",
        "",
        "| loop | ms per step | GEMMs | GEMMs if at their rate alone | optimizer | other | GEMM "
        "GFLOP/s in the step / alone |",
        "|---|---:|---:|---:|---:|---:|---:|"
    ]
    for key, b in results["step_breakdown"].items():
        lines.append(
            f"| {LOOPS[key]} | {b['ms_per_step']:.2f} | {b['gemm_ms']:.2f} | "
            f"{b['gemm_ms_alone']:.2f} | "
            f"{b['optimizer_ms']:.2f} | {b['other_ms']:.2f} | "
            f"{b['gemm_gflops_in_step']:.0f} / {b['gemm_gflops_alone']:.0f} |")
    bf16 = [c for c in results["ceiling"] if c["gflops_bf16"]]
    flop = sum(2 * c["M"] * c["K"] * c["N"] for c in bf16)
    seconds = [sum(2 * c["M"] * c["K"] * c["N"] / c[key] for c in bf16)
               for key in ("gflops", "gflops_bf16")]
    hardware = ", ".join(m["bf16_hardware"]) or "none of amx_bf16, avx512_bf16"
    lines += [
        "",
        f"What a faster step can gain at most (Amdahl's law on the profile above). The same "
        f"GEMMs alone in bfloat16 run at {flop / seconds[1]:,.0f} GFLOP/s, "
        f"{seconds[0] / seconds[1]:.2f}x float32's {flop / seconds[0]:,.0f} (this CPU's bfloat16 "
        f"instructions: {hardware}); casts are not counted, so these are upper bounds. The last "
        f"column is what the time outside the GEMMs must come down to for {TARGET}x today's "
        "step with bfloat16 GEMMs (a negative value: out of reach even with nothing else).",
        "",
        "| loop | ms per step | outside the GEMMs | x if the GEMMs took no time | bfloat16 GEMMs "
        f"alone | x with them, the rest as now | outside the GEMMs for {TARGET}x |",
        "|---|---:|---:|---:|---:|---:|---:|"
    ]
    for key, b in results["step_breakdown"].items():
        h = b["headroom"]
        lines.append(
            f"| {LOOPS[key]} | {b['ms_per_step']:.2f} | {h['rest_ms']:.2f} | "
            f"{h['speedup_if_gemms_free']:.2f} | {h['gemm_ms_bf16_alone']:.2f} | "
            f"{h['speedup_with_bf16_gemms']:.2f} | {h['rest_ms_for_target']:.2f} |")
    lines += ["", f"PROFILE=paper ({PAPER_SAMPLES:.0e} training samples per run), training only, "
              "evaluation not included:"]
    for name, model in results["models"].items():
        hours = model["paper_profile_hours"]
        lines.append(
            f"- {name}: AEVB {hours['aevb']:,.1f} h, wake-sleep {hours['wake_sleep']:,.1f} h per "
            "run"
        )
    return "\n".join(lines) + "\n"


def worker(samples, threads):
    """One AEVB training job, as one `make -j` job runs it: print its samples/s after a warm-up."""
    torch.set_num_threads(threads)
    x = load_mnist(None, "train")[0]
    run = vae_core_loop(vc.VAE(784, Z_DIM, hidden=MODELS["784-500-20"]), x, "aevb")
    run(WARMUP)
    start = time.perf_counter()
    run(samples)
    print(samples / (time.perf_counter() - start))


def parallel_jobs(cores):
    """Aggregate AEVB samples/s of `jobs` concurrent processes with cores/jobs threads each: what
    `make -j jobs paper` gets from the machine (jobs = 1 is plain `make paper`)."""
    out = {}
    for jobs in sorted({1, cores}):
        cmd = [sys.executable, __file__, "--worker", str(SAMPLES * 2), str(max(1, cores // jobs))]
        if QUICK_MODE:
            cmd.append("--quick")
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
        rates = [float(p.communicate()[0].split()[-1]) for p in procs]
        out[str(jobs)] = {
            "jobs": jobs, "threads_per_job": max(1, cores // jobs), "samples_per_s": sum(rates)
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for the test (seconds, 1 repeat)")
    parser.add_argument("--threads", type=int, default=0,
                        help="PyTorch CPU threads (0: PyTorch's default)")
    parser.add_argument("--out", default="bench/results.json",
                        help="results.json; results.md goes beside it")
    parser.add_argument("--worker", nargs=2, type=int, metavar=("SAMPLES", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:  # like nanoGPT's configurator: the flag overrides the settings block
        globals().update(QUICK, QUICK_MODE=True)
    if args.worker:
        return worker(*args.worker)
    if args.threads:
        torch.set_num_threads(args.threads)
    # A fresh compile cache, so that the compile time measured is what a first run pays
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)
    machine = machine_info()  # before the work, so the load average says how busy the machine was
    out = Path(args.out)

    x = load_mnist(None, "train")[0]  # verifies the files; torchvision then reads the same ones
    # torchvision unpacks the .gz files beside them: into a folder of our own, never the data folder
    mnist_root = Path(tempfile.mkdtemp(prefix="bench-mnist-"))
    atexit.register(shutil.rmtree, mnist_root, True)
    (mnist_root / "MNIST" / "raw").mkdir(parents=True)
    for name in DATA_FILES:
        if name.startswith("MNIST/"):  # all four, or torchvision tries to download the others
            (mnist_root / name).symlink_to(data_file(None, name).resolve())
    mnist = datasets.MNIST(str(mnist_root), train=True, download=True,
                           transform=transforms.ToTensor())
    x_is = load_mnist(None, "test")[0][:IS_POINTS]

    results = {
        "machine": machine, "settings": {
            "batch_size": BATCH, "z_dim": Z_DIM, "n_samples": N_SAMPLES,
            "samples_per_repeat": SAMPLES, "warmup_samples": WARMUP, "repeats": REPEATS,
            "is_points": IS_POINTS, "is_k": IS_K, "quick": args.quick, "device": "cpu",
            "paper_samples": PAPER_SAMPLES
        }, "units": {
            "samples_per_s": "training datapoints per second; log_likelihood: datapoint-samples "
            "(points * k) per second",
            "gflops": "GEMM FLOPs only (2*M*N*K per GEMM, see gemms) per second",
            "ceiling_gflops": "the same GEMMs, each timed alone at its shape with the same threads",
            "paper_profile_hours": "paper_samples / samples_per_s, training only"
        }, "models": {}
    }
    rates = {}  # (op, M, K, N) -> GFLOP/s, shared by the models
    rates_bf16 = {}  # the same in bfloat16, for the report's model's steps
    for name, hidden in MODELS.items():
        def fresh():  # every loop starts from the same initial model
            torch.manual_seed(0)
            return vc.VAE(784, Z_DIM, hidden=hidden)
        model = fresh()
        enc, dec = linear_shapes(model.encoder), linear_shapes(model.decoder)
        is_units = len(x_is) * IS_K
        aevb_units = (SAMPLES, WARMUP, aevb_gemms(enc, dec), BATCH)
        loops = {  # key: (run, units per repeat, warm-up units, GEMMs done per `per` units, per)
            "reference": (reference_loop(fresh(), mnist), *aevb_units),
            "tensor_loader": (tensor_loader_loop(fresh(), x), *aevb_units),
            "aevb": (vae_core_loop(fresh(), x, "aevb"), *aevb_units),
            "aevb_kingma": (vae_core_loop(fresh(), x, "aevb", optimizer="adagrad", lr=0.02,
                                          weight_prior=True), *aevb_units),
            "aevb_compiled": (compiled_loop(fresh(), x), *aevb_units),
            "wake_sleep": (vae_core_loop(fresh(), x, "wake_sleep"), SAMPLES, WARMUP,
                           wake_sleep_gemms(enc, dec), BATCH),
            "log_likelihood": (log_likelihood_loop(fresh(), x_is), is_units, is_units,
                               log_likelihood_gemms(enc, dec, len(x_is), IS_K), is_units),
        }
        for _, _, _, gemms, _ in loops.values():
            for _, op, m, k, n, _ in gemms:
                if (op, m, k, n) not in rates:
                    rates[(op, m, k, n)] = gemm_gflops(op, m, k, n, GEMM_MIN_TIME, REPEATS)

        rows, compile_seconds = {}, None
        try:
            start = time.perf_counter()
            loops["aevb_compiled"][0](BATCH)  # the first step compiles
            compile_seconds = time.perf_counter() - start
        except Exception as e:  # e.g. no C++ compiler: the other loops are still worth timing
            results["compile_error"] = f"{type(e).__name__}: {e}"[:500]
            del loops["aevb_compiled"]
        for key, (run, units, warmup, gemms, per) in loops.items():
            seconds = time_loop(run, units, warmup, REPEATS)
            samples_per_s = units / statistics.median(seconds)
            gflop_per_sample = gemm_flops(gemms) / per / 1e9
            rows[key] = {
                "unit": "datapoint-samples/s" if key == "log_likelihood" else "samples/s",
                "samples_per_s": samples_per_s, "seconds": seconds, "units_per_repeat": units,
                "gflop_per_sample": gflop_per_sample, "gflops": gflop_per_sample * samples_per_s,
                "ceiling_gflops": ceiling(gemms, rates),
                "gemms": [dict(zip(("layer", "op", "M", "K", "N", "count"), g)) for g in gemms]
            }
            rows[key]["fraction_of_ceiling"] = rows[key]["gflops"] / rows[key]["ceiling_gflops"]
            rows[key]["ceiling_samples_per_s"] = rows[key]["ceiling_gflops"] / gflop_per_sample
            print(f"{name} {key}: {samples_per_s:,.0f} {rows[key]['unit']}", file=sys.stderr,
                  flush=True)
        for r in rows.values():
            r["ratio_to_reference"] = r["samples_per_s"] / rows["reference"]["samples_per_s"]
        if name == "784-500-20":  # the report's model: where its steps' time goes, and what a
            # faster step could gain at most
            results["step_breakdown"] = {}
            for key, algorithm, options, gemms in (
                    ("aevb", "aevb", {}, aevb_gemms(enc, dec)),
                    ("aevb_kingma", "aevb", dict(optimizer="adagrad", lr=0.02, weight_prior=True),
                     aevb_gemms(enc, dec)),
                    ("wake_sleep", "wake_sleep", {}, wake_sleep_gemms(enc, dec))):
                for _, op, m, k, n, _ in gemms:
                    if (op, m, k, n) not in rates_bf16:
                        rates_bf16[(op, m, k, n)] = gemm_gflops(op, m, k, n, GEMM_MIN_TIME,
                                                                REPEATS, torch.bfloat16)
                b = step_breakdown(vae_core_loop(fresh(), x, algorithm, **options), SAMPLES,
                                   WARMUP, gemms, rates, REPEATS)
                results["step_breakdown"][key] = {**b, "headroom": headroom(b, gemms, rates_bf16)}
        results["models"][name] = {
            "hidden": list(hidden), "loops": rows, "compile_seconds": compile_seconds,
            "paper_profile_hours": {
                a: PAPER_SAMPLES / rows[a]["samples_per_s"] / 3600
                for a in ("aevb", "wake_sleep")
            }
        }

    results["ceiling"] = [{"op": op, "M": m, "K": k, "N": n, "gflops": g,
                           "gflops_bf16": rates_bf16.get((op, m, k, n))}
                          for (op, m, k, n), g in rates.items()]
    results["parallel_jobs"] = parallel_jobs(os.cpu_count())
    assert all(
        math.isfinite(r["samples_per_s"]) for mod in results["models"].values()
        for r in mod["loops"].values())
    table = markdown(results)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), table)
    print(table, end="")


if __name__ == "__main__":
    main()
