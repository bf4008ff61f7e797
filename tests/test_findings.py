"""aevb.findings: the words the numbers decide (compare, versus, moves, row_against, ...), the findings
files the figure notebooks write, and the figure notebooks' findings cells and hidden plumbing."""
import json
import math

import nbformat
import pytest

from aevb import findings
from aevb.figures import notebooks
from aevb.findings import (Findings, below_peak, compare, count, listing, mean_sd, missing, moves, number, orientation,
                           row_against, samples, versus)
from conftest import ROOT

# ---- compare: ours against a published value, given a tolerance ------------------------------------------

def test_compare_within_the_tolerance_says_by_how_much_and_which_side():
    assert compare(-110.6, -112.4, 2.0) == "within the 2-nat tolerance of theirs (1.8 nats ahead)"
    assert compare(-114.0, -112.4, 2.0) == "within the 2-nat tolerance of theirs (1.6 nats behind)"


def test_compare_beyond_the_tolerance_in_both_directions():
    assert compare(-116.0, -112.4, 2.0) == "3.6 nats behind theirs"
    assert compare(-108.0, -112.4, 2.0) == "4.4 nats ahead of theirs"


def test_compare_exactly_at_the_tolerance_is_within_it_as_the_verdict():
    assert compare(-110.5, -112.5, 2.0).startswith("within the 2-nat tolerance")
    assert compare(-114.5, -112.5, 2.0).startswith("within the 2-nat tolerance")
    assert compare(-114.5001, -112.5, 2.0) == "2.0 nats behind theirs"  # just beyond: not within


def test_compare_of_a_loss_counts_lower_as_ahead():
    assert compare(103.0, 101.1, 1.0, higher_is_better=False) == "1.9 nats behind theirs"
    assert compare(99.0, 101.1, 1.0, higher_is_better=False) == "2.1 nats ahead of theirs"
    assert compare(101.5, 101.1, 1.0, higher_is_better=False, of="the report's") == \
        "within the 1-nat tolerance of the report's (0.4 nats behind)"


def test_compare_without_an_orientation_says_above_or_below():
    assert compare(20.3, 24.7, 1.0, higher_is_better=None) == "4.4 nats below theirs"
    assert compare(25.0, 24.7, 1.0, higher_is_better=None) == "within the 1-nat tolerance of theirs (0.3 nats above)"


def test_compare_level_without_a_tolerance_and_with_a_missing_value():
    assert compare(-112.4, -112.4, None) == "level with theirs"
    assert compare(-112.42, -112.4, None) == "level with theirs"  # rounds to 0.0
    assert compare(-112.4, -112.4, 2.0) == "within the 2-nat tolerance of theirs (level)"
    assert compare(math.nan, -112.4, 2.0).startswith("not comparable")
    assert compare(-110.0, None, 2.0).startswith("not comparable")


def test_orientation_of_a_metric():
    assert orientation("test_elbo") is True and orientation("test_log_px_appd") is True
    assert orientation("-test_elbo") is False and orientation("-running_elbo") is False
    assert orientation("test_kl") is None


# ---- versus, moves: one value against another ------------------------------------------------------------

def test_versus_both_directions_ties_and_orientation():
    assert versus(3.0, 1.0) == "ahead by 2.0 nats"
    assert versus(1.0, 3.0) == "behind by 2.0 nats"
    assert versus(1.0, 3.0, higher_is_better=False) == "ahead by 2.0 nats"
    assert versus(1.0, 1.04, tie=0.1) == "level (within 0.1 nats)"
    assert versus(1.0, 1.2, tie=0.1) == "behind by 0.2 nats"
    assert versus(1.0, 1.0) == "level" and versus(1.0, 1.01) == "level"
    assert versus(math.nan, 1.0).startswith("not comparable")


def test_moves_raises_lowers_or_leaves_level():
    assert moves(-121.2, -118.8) == "raises it by 2.4 nats (-121.2 to -118.8)"
    assert moves(-118.8, -121.2, what="the bound") == "lowers the bound by 2.4 nats (-118.8 to -121.2)"
    assert moves(-118.8, -118.82).startswith("leaves it level")
    assert moves(-118.8, -118.9, tie=0.2).startswith("leaves it level")
    assert moves(-118.8, -119.1, tie=0.2).startswith("lowers it by 0.3")


def test_below_peak_says_how_far_a_curve_ends_below_its_peak_or_at_it():
    assert below_peak(-209.8, -166.1) == "43.7 nats below its peak"
    assert below_peak(-115.1, -115.1) == "at its peak"
    assert below_peak(-115.12, -115.1) == "at its peak"  # 0.02 rounds to 0 at one digit
    assert below_peak(-115.12, -115.1, digits=2) == "0.02 nats below its peak"
    assert "cannot be judged" in below_peak(float("nan"), -115.1)
    with pytest.raises(ValueError, match="above its peak"):
        below_peak(-110.0, -115.1)


# ---- numbers as text -------------------------------------------------------------------------------------

def test_mean_sd_count_listing_samples_number():
    assert mean_sd([1.0, 2.0, 3.0]) == "2.00 ± 1.00 (3 seeds)"
    assert mean_sd([1.0, math.nan]) == "1.00 (1 seed)"
    assert mean_sd([]) == "no value"
    assert count(1, "run") == "1 run" and count(3, "run") == "3 runs" and count(2, "is", "are") == "2 are"
    assert listing([]) == "none" and listing([2]) == "2" and listing([2, 3]) == "2 and 3"
    assert listing([2, 3, 5]) == "2, 3 and 5"
    assert samples(2000) == "2,000" and samples(3e6) == "3×10^6" and samples(1e8) == "10^8"
    assert samples(6.8e7) == "6.8×10^7" and samples(9.99e6) == "10^7"
    assert number(101.1053) == "101.11" and number(-112.4) == "-112.4" and number(872.0) == "872"
    assert missing(None) and missing(math.nan) and not missing(0.0)


# ---- row_against: a scorecard row as a phrase ------------------------------------------------------------

def card_row(**changes):
    row = {"verdict": "reproduced", "published": -112.4, "ours": -110.6, "ours_sd": 1.03, "n_runs": 3,
           "tolerance": "2.0", "samples_trained": 3_000_000, "samples_published": 3_000_000}
    return {**row, **changes}


def test_row_against_a_judged_row_within_and_beyond_the_tolerance():
    assert row_against(card_row(), "test_elbo") == \
        "ours -110.60 ± 1.03 (3 seeds), within the 2-nat tolerance of theirs, -112.4 (1.8 nats ahead)"
    assert row_against(card_row(ours=-120.0, n_runs=1, verdict="not reproduced"), "test_elbo") == \
        "ours -120.00, 7.6 nats behind theirs, -112.4"


def test_row_against_a_loss_row_counts_lower_as_ahead():
    row = card_row(published=101.1053, ours=99.0, n_runs=1, tolerance="1.0", verdict="not reproduced")
    assert row_against(row, "-test_elbo") == "ours 99.00, 2.1 nats ahead of theirs, 101.11"


def test_row_against_a_row_not_run_at_its_scale_says_why():
    assert row_against(card_row(verdict="not run at this scale", samples_trained=2000), "test_elbo") == \
        "not run at this scale (ours trained 2,000 samples, theirs 3×10^6)"
    assert row_against(card_row(verdict="not run at this scale", n_runs=0, ours=math.nan), "test_elbo") == \
        "not run at this scale (no such run in this profile)"


# ---- Findings: the file the index page and RESULTS.md read -----------------------------------------------

def test_findings_are_saved_as_they_are_stated_and_loaded_in_order(tmp_path):
    say = Findings("scorecard", tmp_path, display=False)
    say("claim2", "Wake-sleep trails AEVB by **8.3 nats**.", headline=True, title="Wake-sleep")
    say("verdicts", "26 reproduced.")
    saved = json.loads((tmp_path / "findings" / "scorecard.json").read_text())
    assert [f["key"] for f in saved] == ["claim2", "verdicts"]
    assert saved[0] == {"key": "claim2", "text": "Wake-sleep trails AEVB by **8.3 nats**.", "headline": True,
                        "title": "Wake-sleep", "notebook": "scorecard", "anchor": "finding-scorecard-claim2",
                        "figure": "", "template": "Wake-sleep trails AEVB by **8.3 nats**."}
    say("verdicts", "27 reproduced.")  # restated: replaced, not added
    other = Findings("burda2015", tmp_path, display=False)
    other.save()  # nothing stated: an empty list, so the file exists in every profile
    assert json.loads((tmp_path / "findings" / "burda2015.json").read_text()) == []
    loaded = findings.load(tmp_path, ["burda2015", "scorecard", "kingma2013"])
    assert [f["text"] for f in loaded] == ["Wake-sleep trails AEVB by **8.3 nats**.", "27 reproduced."]


def test_a_finding_key_must_be_an_anchor_word(tmp_path):
    say = Findings("scorecard", tmp_path, display=False)
    with pytest.raises(ValueError, match="finding key"):
        say("Claim 2", "text")
    assert not (tmp_path / "findings").exists()


# ---- the figure notebooks state findings and hide their plumbing ------------------------------------------

@pytest.mark.parametrize("name", notebooks())
def test_each_figure_notebook_states_findings_in_hidden_cells(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    stating = [c for c in code if "say(" in c.source]
    assert any(f'Findings("{name}"' in c.source for c in code), f"{name} makes no Findings"
    assert stating and all("remove-input" in c.metadata.get("tags", []) for c in stating), name
    assert "say.save()" in code[-1].source or any("say.save()" in c.source for c in code), name
    assert not any("print(f" in c.source for c in stating), f"{name}: a finding printed, not stated"
    assert any("remove-input" in c.metadata.get("tags", []) for c in code if "import " in c.source), name
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name} is committed with outputs"


# ---- the words follow the sign of the numbers ----------------------------------------------------------------

@pytest.mark.parametrize("a, b", [(-110.6, -112.4), (3.0, 1.0), (0.5, -4.0), (101.2, 99.0)])
def test_swapping_the_values_swaps_the_words(a, b):
    """Whatever the values, a against b and b against a say opposite things: ahead/behind, above/below,
    raises/lowers, each with the same distance; a tolerance they both exceed does not change that."""
    d = f"{abs(a - b):.1f} nats"
    assert (versus(a, b), versus(b, a)) == (f"ahead by {d}", f"behind by {d}")
    assert (versus(a, b, higher_is_better=False), versus(b, a, higher_is_better=False)) == \
        (f"behind by {d}", f"ahead by {d}")
    assert (compare(a, b, 0.1), compare(b, a, 0.1)) == (f"{d} ahead of theirs", f"{d} behind theirs")
    assert (compare(a, b, 0.1, higher_is_better=False), compare(b, a, 0.1, higher_is_better=False)) == \
        (f"{d} behind theirs", f"{d} ahead of theirs")
    assert (compare(a, b, None, higher_is_better=None), compare(b, a, None, higher_is_better=None)) == \
        (f"{d} above theirs", f"{d} below theirs")
    assert moves(b, a).startswith(f"raises it by {d}") and moves(a, b).startswith(f"lowers it by {d}")
    tolerance = abs(a - b) + 0.5  # within it: the side still follows the sign
    assert compare(a, b, tolerance).endswith(f"({d} ahead)") and compare(b, a, tolerance).endswith(f"({d} behind)")


# ---- templates: each finding written once by hand, its numbers and their words filled in ------------------

def test_fill_puts_the_numbers_and_the_words_that_follow_their_signs():
    template = "IWAE {lead:leads/trails/ties with} the VAE by {lead:abs.2f} nats after {n:samples} samples: {verdict}."
    assert findings.fill(template, lead=0.31, n=3e6, verdict="reproduced") == \
        "IWAE leads the VAE by 0.31 nats after 3×10^6 samples: reproduced."
    assert findings.fill(template, lead=-0.31, n=2000, verdict="x") == "IWAE trails the VAE by 0.31 nats after 2,000 samples: x."
    assert findings.fill(template, lead=0.0, n=1e8, verdict="x").startswith("IWAE ties with the VAE by 0.00")
    assert findings.fill("{ok:agrees/differs}; {d:higher/lower}", ok=False, d=0.0) == "differs; lower"  # zero: the second
    assert findings.fill("{x:+.1f} {p:number}", x=2, p=101.1053) == "+2.0 101.11"


def test_fill_refuses_a_missing_value_or_field_and_bad_words():
    with pytest.raises(ValueError, match="missing"):
        findings.fill("gap {gap:.1f}", gap=math.nan)
    with pytest.raises(KeyError, match="no value fills"):
        findings.fill("gap {gap:.1f}")
    with pytest.raises(ValueError, match="positive/negative"):
        findings.sign_word(1.0, ["a", "b", "c", "d"])


def test_a_finding_names_a_known_figure_and_records_its_template(tmp_path):
    say = Findings("scorecard", tmp_path, display=False)
    say("gap", "AEVB {gap:leads/trails} by {gap:abs.1f} nats.", gap=-2.0, figure="kingma_fig2_lower_bound")
    saved = json.loads((tmp_path / "findings" / "scorecard.json").read_text())[0]
    assert saved["text"] == "AEVB trails by 2.0 nats." and saved["figure"] == "kingma_fig2_lower_bound"
    assert saved["template"] == "AEVB {gap:leads/trails} by {gap:abs.1f} nats."
    with pytest.raises(KeyError, match="not a figure"):
        say("other", "text", figure="no_such_figure")
    with pytest.raises(ValueError, match="scorecard/bad: the value of {gap} is missing"):
        say("bad", "gap {gap:.1f}", gap=None)


def say_calls(name):
    """Every say(key, template, ...) call in a figure notebook's code, as ast.Call nodes."""
    import ast
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    calls = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "say(" in cell.source:
            calls += [node for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Call)
                      and isinstance(node.func, ast.Name) and node.func.id == "say"]
    return calls


def template_of(call):
    import ast
    assert len(call.args) >= 2 and isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str), \
        f"line {call.lineno}: a finding's template is a string written by hand, not text assembled by code"
    return call.args[1].value


WORD_LIMIT = 50  # words a finding may have, its fields counted as one word each


@pytest.mark.parametrize("name", notebooks())
def test_each_finding_is_a_short_template_written_once_with_its_figure(name):
    """Every finding of every figure notebook is a template written by hand (a string constant, no f-string,
    no word chosen by an if in the call), of at most about 50 words, naming the figure or table that shows it."""
    import ast

    from aevb.figures import CSV_TABLES, FIGURES
    calls = say_calls(name)
    assert calls, f"{name} states no finding"
    for call in calls:
        template = template_of(call)
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        figure = keywords.get("figure")
        assert isinstance(figure, ast.Constant) and (figure.value in FIGURES or figure.value in CSV_TABLES), \
            f"{name}, line {call.lineno}: no figure= naming a figure or table of aevb.figures"
        decided_here = [n for arg in call.args[2:] + [k.value for k in call.keywords]
                        for n in ast.walk(arg) if isinstance(n, (ast.IfExp, ast.JoinedStr))]
        assert not decided_here, f"{name}, line {call.lineno}: a word decided in the call; use a sign field"
        assert findings.words(template) <= WORD_LIMIT, f"{name}, line {call.lineno}: {findings.words(template)} words"


def example_values(template, value=1.5):
    return {field: value for field, _ in findings.fields(template)}


@pytest.mark.parametrize("name", notebooks())
def test_each_findings_words_follow_the_signs_of_its_numbers(name):
    """For every finding of every figure notebook and every number whose sign it words (leads/trails,
    higher/lower, within/beyond, looser/tighter, ...): the number's sign flipped, the words flip with it."""
    signed = 0
    for call in say_calls(name):
        template = template_of(call)
        findings.fill(template, **example_values(template))  # every field fills
        for field, spec in findings.fields(template):
            if "/" not in spec:
                continue
            positive, negative = spec.split("/")[:2]
            before = findings.fill(template, **example_values(template))
            after = findings.fill(template, **{**example_values(template), field: -1.5})
            assert positive in before and negative in after and before != after, (name, template, field)
            signed += 1
    if name != "burda2015":
        assert signed, f"{name}: no finding words the sign of a number"
