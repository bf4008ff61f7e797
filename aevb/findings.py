"""Findings: the sentences a figure notebook concludes with, computed from the numbers it has just built.

A figure notebook ends with its conclusions, written from its own tables (never typed by hand), so a
rerun that changes a result changes the sentence. Each finding is shown in the notebook as Markdown
and recorded in `<figures_dir>/findings/<notebook>.json`, from which the index page (headline
findings, linked to the notebook section that shows them) and RESULTS.md read it: a fact is written
once, where its evidence is, and read everywhere else.

    say = Findings("scorecard", figures_root)
    say("claim2", f"Wake-sleep trails AEVB by {gap:.2f} nats ...", headline=True)
    say.save()   # at the end of the notebook (each call also saves, so a failed cell keeps the rest)

The comparison words come from the helpers below, so the numbers decide them: `compare` (ours against
a published value and its tolerance: 'within the 2-nat tolerance of theirs (0.4 nats ahead)', '3.1
nats behind theirs'), `row_against` (a scorecard row, or why it was not judged), `versus` (one value
against another), `moves` (what a change does: 'raises it by 2.4 nats'); `orientation` says which way
is better for a metric (a bound, a loss, a KL), `mean_sd`, `samples`, `number`, `count` and `listing`
write the numbers and lists.
"""
import json
import math
import re
from pathlib import Path

from aevb.files import atomic_write_text

FOLDER = "findings"  # below the profile's figures folder


def anchor(notebook, key):
    """The HTML id of a finding in its rendered notebook, e.g. 'finding-scorecard-claim2'."""
    return "finding-" + re.sub(r"[^a-z0-9]+", "-", f"{notebook}-{key}".lower()).strip("-")


class Findings:
    """The findings of one figure notebook: call it to state one, `save()` to write them all."""

    def __init__(self, notebook, figures_dir, display=True):
        self.notebook, self.path, self.display = notebook, Path(figures_dir) / FOLDER / f"{notebook}.json", display
        self.items = {}

    def __call__(self, key, text, headline=False, title=None):
        """State a finding (Markdown) under `key`: shown at once in the notebook, with an anchor the index
        links to; `headline`: also listed at the top of the index and in RESULTS.md, under `title`."""
        if not re.fullmatch(r"[a-z0-9_]+", key):
            raise ValueError(f"finding key {key!r}: use lower-case letters, digits and _")
        self.items[key] = {"key": key, "text": text, "headline": bool(headline), "title": title or "",
                           "notebook": self.notebook, "anchor": anchor(self.notebook, key)}
        if self.display:
            from IPython.display import Markdown, display
            display(Markdown(f'<a id="{anchor(self.notebook, key)}"></a>\n\n{text}'))
        self.save()
        return None  # (not the text: a cell ending in a finding would show it twice)

    def save(self):
        atomic_write_text(self.path, json.dumps(list(self.items.values()), indent=1) + "\n")
        return self.path


def load(figures_dir, notebooks=None):
    """Every recorded finding, notebook by notebook (in `notebooks`' order where given)."""
    folder = Path(figures_dir) / FOLDER
    paths = ([folder / f"{n}.json" for n in notebooks] if notebooks is not None
             else sorted(folder.glob("*.json")))
    found = []
    for path in paths:
        if path.exists():
            found += json.loads(path.read_text())
    return found


def headlines(figures_dir):
    """The headline findings in reading order: the scorecard's first (the verdicts), then each figure
    notebook's in the order aevb.figures lists them. What the index page and RESULTS.md list."""
    from aevb.figures import notebooks
    order = ["scorecard", *(n for n in notebooks() if n != "scorecard")]
    return [f for f in load(figures_dir, order) if f["headline"]]


# ---- words the numbers decide --------------------------------------------------------------------------

def missing(*values):
    """Whether any value is None or NaN (a run this profile lacks, a metric a run did not log)."""
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def nats(value, digits=1, signed=False):
    """'3.2 nats' (or '+3.2 nats')."""
    return f"{value:{'+' if signed else ''}.{digits}f} nats"


def orientation(metric):
    """Whether a higher value of a published_numbers.csv `metric` is better: True for a bound or a log
    p(x) ('test_elbo', 'test_log_px_appd'), False for a loss ('-test_elbo': negated), None for a KL
    (neither: 'above'/'below')."""
    if metric.lstrip("-").endswith("_kl"):
        return None
    return not metric.startswith("-")


def _side(diff, higher_is_better):
    """The word for a signed difference `diff` = ours - theirs."""
    if higher_is_better is None:
        return "above" if diff > 0 else "below"
    return "ahead of" if diff * (1 if higher_is_better else -1) > 0 else "behind"


def compare(ours, published, tolerance, higher_is_better=True, digits=1, of="theirs"):
    """How `ours` stands against `published` given a tolerance, as words ending in `of`: 'within the
    2-nat tolerance of theirs (0.4 nats ahead)', '3.1 nats behind theirs', '5.0 nats ahead of theirs'.
    higher_is_better: True for a bound or log p(x), False for a loss (then a lower value is ahead),
    None for neither ('above'/'below'). Exactly at the tolerance counts as within it, as the
    scorecard's verdict does; a difference that rounds to 0 at `digits` is 'level with'."""
    if missing(ours, published):
        return f"not comparable with {of} (a value is missing)"
    diff = ours - published
    shown = round(abs(diff), digits)
    side = _side(diff, higher_is_better)
    if tolerance is not None and not missing(tolerance) and abs(diff) <= tolerance:
        inside = f"{shown:.{digits}f} nats {side.removesuffix(' of')}" if shown else "level"
        return f"within the {tolerance:g}-nat tolerance of {of} ({inside})"
    if not shown:
        return f"level with {of}"
    return f"{shown:.{digits}f} nats {side} {of}"


def versus(a, b, higher_is_better=True, digits=1, tie=0.0):
    """'ahead by 3.2 nats' / 'behind by 3.2 nats' / 'level (within 0.1 nats)' for a against b; a tie
    of 0 and a difference that rounds to 0 at `digits`: 'level'."""
    if missing(a, b):
        return "not comparable (a value is missing)"
    diff = (a - b) * (1 if higher_is_better else -1)
    if abs(diff) <= tie:
        return f"level (within {tie:g} nats)" if tie else "level"
    if not round(abs(diff), digits):
        return "level"
    return f"{'ahead' if diff > 0 else 'behind'} by {abs(diff):.{digits}f} nats"


def moves(before, after, digits=1, tie=0.0, what="it"):
    """What a change does to a value, as words: 'raises it by 2.4 nats (-121.2 to -118.8)', 'lowers it
    by ...', or 'leaves it level (-121.2 and -121.3)' where the change is within `tie` or rounds to 0."""
    if missing(before, after):
        return "cannot be judged (a value is missing)"
    diff = after - before
    ends = f"{before:.{digits}f} to {after:.{digits}f}"
    if abs(diff) <= tie or not round(abs(diff), digits):
        return f"leaves {what} level ({before:.{digits}f} and {after:.{digits}f})"
    return f"{'raises' if diff > 0 else 'lowers'} {what} by {abs(diff):.{digits}f} nats ({ends})"


def mean_sd(values, digits=2, unit="seed"):
    """'-110.60 ± 1.03 (3 seeds)' or '-110.60 (1 seed)' for a list of values (NaNs dropped)."""
    values = [v for v in values if not missing(v)]
    if not values:
        return "no value"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} ({count(1, unit)})"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f} ({count(len(values), unit)})"


def samples(n):
    """Training samples, short: '2,000', '3×10^6', '10^8', '6.8×10^7'."""
    n = float(n)
    if n < 1e5:
        return f"{n:,.0f}"
    exponent = math.floor(math.log10(n))
    mantissa = round(n / 10 ** exponent, 1)
    if mantissa == 10:
        mantissa, exponent = 1, exponent + 1
    head = "" if mantissa == 1 else f"{mantissa:g}×"
    return f"{head}10^{exponent}"


def number(value, digits=2):
    """A published value as read: '101.11' for 101.1053, '-112.4', '872'."""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def row_against(row, metric, digits=1, of="theirs"):
    """A scorecard row (aevb.scorecard.build's, as a dict or Series), whose published_numbers.csv
    `metric` says which way is better (see `orientation`), as one phrase: 'ours -110.60 ± 1.03 (3
    seeds), within the 2-nat tolerance of theirs, -112.4 (1.8 nats ahead)', '... 3.1 nats behind
    theirs, -112.4', or, where it was not judged, why: 'not run at this scale (ours trained 2,000
    samples, theirs 3×10^6)'."""
    verdict, published = row["verdict"], row["published"]
    n = 0 if missing(row["n_runs"]) else int(row["n_runs"])
    if verdict == "not run at this scale":
        if not n:
            return "not run at this scale (no such run in this profile)"
        return (f"not run at this scale (ours trained {samples(row['samples_trained'])} samples, theirs "
                f"{samples(row['samples_published'])})")
    ours = f"{row['ours']:.2f}" + (f" ± {row['ours_sd']:.2f} ({n} seeds)" if n > 1 else "")
    tolerance = float(row["tolerance"]) if row["tolerance"] not in ("", None) else None
    words = compare(row["ours"], published, tolerance, orientation(metric), digits, of=of)
    if "(" not in words:
        return f"ours {ours}, {words}, {number(published)}"
    return f"ours {ours}, {words.replace(f' {of} (', f' {of}, {number(published)} (', 1)}"


def count(n, noun, plural=None):
    """'1 run', '3 runs'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def listing(items, empty="none"):
    """'a', 'a and b', 'a, b and c'; `empty` for no items."""
    items = [str(i) for i in items]
    if not items:
        return empty
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]
