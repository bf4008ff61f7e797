"""Findings: the sentences a figure notebook concludes with, computed from the numbers it has just built.

A figure notebook ends with its conclusions, written from its own tables (never typed by hand), so a
rerun that changes a result changes the sentence. Each finding is shown in the notebook as Markdown
and recorded in `<figures_dir>/findings/<notebook>.json`, from which the index page (headline
findings, linked to the notebook section that shows them) and RESULTS.md read it: a fact is written
once, where its evidence is, and read everywhere else.

    say = Findings("scorecard", figures_root)
    say("claim2", f"Wake-sleep trails AEVB by {gap:.2f} nats ...", headline=True)
    say.save()   # at the end of the notebook (each call also saves, so a failed cell keeps the rest)

The comparison words ("within the tolerance of", "ahead of", "behind") come from `compare` and
`versus`, so the numbers decide them.
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
        return text

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

def nats(value, digits=1, signed=False):
    """'3.2 nats' (or '+3.2 nats')."""
    return f"{value:{'+' if signed else ''}.{digits}f} nats"


def compare(ours, published, tolerance, higher_is_better=True, digits=1):
    """How `ours` stands against `published` given a tolerance, as words: 'within the 2-nat tolerance of
    (0.4 nats ahead)', '3.1 nats behind', '5.0 nats ahead'. higher_is_better: a bound or log p(x) (True);
    a loss (False). Exactly at the tolerance counts as within it, as the scorecard's verdict does."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (ours, published)):
        return "not comparable (a value is missing)"
    diff = (ours - published) * (1 if higher_is_better else -1)
    side = "ahead of" if diff > 0 else "behind" if diff < 0 else "level with"
    gap = f"{abs(diff):.{digits}f} nats {side}" if diff else "level with"
    if tolerance is not None and not math.isnan(tolerance) and abs(diff) <= tolerance:
        return f"within the {tolerance:g}-nat tolerance ({gap})"
    return gap


def versus(a, b, higher_is_better=True, digits=1, tie=0.0):
    """'ahead by 3.2 nats' / 'behind by 3.2 nats' / 'level (within 0.1 nats)' for a against b."""
    diff = (a - b) * (1 if higher_is_better else -1)
    if abs(diff) <= tie:
        return f"level (within {tie:g} nats)"
    return f"{'ahead' if diff > 0 else 'behind'} by {abs(diff):.{digits}f} nats"


def count(n, noun, plural=None):
    """'1 run', '3 runs'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def listing(items):
    """'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]
