"""The smoke build's terminal (the session's `make -j4 paper PROFILE=smoke`): its plan before the steps,
one progress line per run and figure notebook, each run's lines in a log beside its notebook, and no
kernel warning."""
import re

import pytest

from aevb import grid

pytestmark = pytest.mark.slow

LINE = re.compile(r"^(\d+) of (\d+) done \(\d+%\), (.+?) elapsed(?:, about (.+?) left)?: (trained|reused|ran) (\S+) in ",
                  re.M)


def test_make_paper_says_its_cost_first_then_a_line_per_step(smoke_paper):
    out, log = smoke_paper
    runs = [r.name for r in grid.runs(profile="smoke")]
    notebooks = [f"notebooks/{nb}.ipynb" for nb in grid.NOTEBOOK_RUNS]
    n = len(runs) + len(notebooks)
    plan = log.index("Plan: ")
    assert log[plan:].startswith(f"Plan: {len(runs)} run(s) to train, 0 finished run(s) reused, {len(notebooks)} "
                                 "figure notebook(s) to run (smoke profile, -j4")
    assert re.match(r"[^\n]*Estimated time here: about \d[^\n]* GFLOP/s in training", log[plan:])
    lines = LINE.findall(log)
    assert lines and log.index(lines[0][0] + " of ") > plan
    assert sorted(int(k) for k, *_ in lines) == list(range(1, n + 1)) and {int(m) for _, m, *_ in lines} == {n}
    assert sorted(name for *_, name in lines) == sorted(runs + notebooks)
    assert all(how == "trained" for *_, how, name in lines if name in runs)
    assert all(left for k, _, _, left, *_ in lines if int(k) < n)  # a time left on every line but the last
    for name in runs:
        assert (out / "build" / "notebooks" / f"train_{name.replace('/', '_')}.log").read_text().count("device cpu")
    # quiet: no kernel warning, no run's own lines in the terminal
    for noise in ("without encryption", "KeyboardInterrupt", "[IPKernelApp]", "training and 200 test points"):
        assert noise not in log, noise
