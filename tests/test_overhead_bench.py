"""bench/overhead.py end to end, once, on the working tree: every part of a notebook's time is measured
and they add up to the notebook's wall time. No timing is asserted."""
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_overhead_bench_splits_a_notebooks_time(tmp_path):
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, str(ROOT / "bench" / "overhead.py"), "--repeat", "1", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads(out.read_text())["after"]
    parts = after["notebook"]
    assert all(math.isfinite(v) and v >= 0 for v in parts.values()), parts
    assert sum(parts.values()) == pytest.approx(after["wall_s"], rel=1e-6)  # the parts cover the whole
    assert 0 < after["cpu_s"] and not after["kernel_warning"]
    inside = after["training_cell"]
    for part in ("checksums", "data loading", "training steps", "evaluation (the history's bounds)",
                 "estimates after training", "writing the run folder", "PyTorch compiler import (first optimizer)"):
        assert inside[part] > 0, part
    assert set(after["imports"]) >= {"torch", "papermill (run_notebook.py)"}
    assert (tmp_path / "overhead.md").read_text() in result.stdout
