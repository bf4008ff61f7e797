"""bench/bench.py --quick end to end: every loop for both models, a ceiling, the table. No timing is asserted."""
import json
import math
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

MODELS = ("784-500-20", "784-500-500-20")
LOOPS = ("reference", "tensor_loader", "aevb", "aevb_kingma", "aevb_compiled", "wake_sleep", "log_likelihood")


def test_quick_bench_writes_every_loop_and_the_table(tmp_path):
    out = tmp_path / "results.json"
    # One thread: fast and steady even when other jobs hold the cores; it also exercises --threads.
    cmd = [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--threads", "1", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"

    results = json.loads(out.read_text())
    assert results["machine"]["threads"] == 1 and results["machine"]["cpu"] and results["machine"]["torch"]
    assert results["ceiling"] and all(g["gflops"] > 0 for g in results["ceiling"])
    table = (tmp_path / "results.md").read_text()
    assert table in result.stdout  # the table printed is the table written
    # torch.compile needs a C++ compiler; without one the bench says why and times the rest
    loops = LOOPS if shutil.which("g++") else tuple(k for k in LOOPS if k != "aevb_compiled")
    if "aevb_compiled" not in loops:
        assert "compile_error" in results and "torch.compile failed" in table
    for name in MODELS:
        model = results["models"][name]
        assert list(model["loops"]) == list(loops)
        if "aevb_compiled" in loops:
            assert model["compile_seconds"] > 0 and "first step compiles" in table
        for key, loop in model["loops"].items():
            for field in ("samples_per_s", "gflops", "ceiling_gflops", "fraction_of_ceiling", "ratio_to_reference"):
                assert math.isfinite(loop[field]) and loop[field] > 0, (name, key, field, loop[field])
            assert loop["gemms"]
        assert model["loops"]["reference"]["ratio_to_reference"] == 1
        assert all(math.isfinite(h) and h > 0 for h in model["paper_profile_hours"].values())
        rows = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == len(loops), rows
    jobs = results["parallel_jobs"]
    assert "1" in jobs and all(math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 for r in jobs.values())
    assert "job(s) x" in table
    breakdown = results["step_breakdown"]
    assert list(breakdown) == ["aevb", "aevb_kingma", "wake_sleep"]
    for key, b in breakdown.items():
        parts = (b["gemm_ms"], b["optimizer_ms"], b["other_ms"])
        assert all(math.isfinite(v) and v > 0 for v in parts), (key, b)
        assert math.isclose(sum(parts), b["ms_per_step"], rel_tol=1e-9), (key, b)
        # both GEMM times are of the same FLOPs, at the rate in the step and at the rate alone
        assert math.isclose(b["gemm_ms_alone"] * b["gemm_gflops_alone"], b["gemm_ms"] * b["gemm_gflops_in_step"],
                            rel_tol=1e-6), (key, b)
        # Amdahl's law on the profile: what no GEMM time, or the GEMMs at their bfloat16 rate alone,
        # would make of the step, and what the rest must come down to for 3x
        h = b["headroom"]
        rest = b["ms_per_step"] - b["gemm_ms"]
        assert math.isclose(h["rest_ms"], rest) and h["speedup_if_gemms_free"] > 1
        assert math.isclose(h["speedup_with_bf16_gemms"], b["ms_per_step"] / (rest + h["gemm_ms_bf16_alone"]))
        assert math.isclose(h["rest_ms_for_target"], b["ms_per_step"] / h["target"] - h["gemm_ms_bf16_alone"])
        assert h["gemm_ms_bf16_alone"] > 0 and h["target"] == 3
    bf16 = [c for c in results["ceiling"] if c["gflops_bf16"]]
    assert bf16 and all(c["gflops_bf16"] > 0 for c in bf16)
    assert isinstance(results["machine"]["bf16_hardware"], list)
    assert "What a faster step can gain at most" in table and "outside the GEMMs for 3x |" in table
    assert sum(line.startswith("| 3 vae_core.train aevb |") for line in table.splitlines()) == 2
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no leftovers
