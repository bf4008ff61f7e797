"""Findings: the sentences a figure notebook concludes with, written once by hand as templates whose
numbers (and the words that follow their signs) are filled in from the numbers it has just built.

A finding is prose a reviewer reads in seconds: one or two sentences, about 50 words at most, with
the one or two numbers that carry it, its verdict, and the figure or table that shows it. It is
written as a template (showyourwork's `\\variable`: the sentence by hand, its numbers from the runs)
and filled by `fill`, so a rerun that changes a result changes the sentence, and a number whose sign
flips flips its words. Each finding is shown in the notebook as Markdown and recorded in
`<figures_dir>/findings/<notebook>.json`, from which the index page and RESULTS.md read it (beside
its figure): a fact is written once, where its evidence is, and read everywhere else.

    say = Findings("scorecard", figures_root)
    say("claim2", "The true wake-sleep's test loss is {gap:abs.2f} nats {gap:higher/lower} than "
        "AEVB's: claim 2 is {verdict}.", gap=8.15, verdict="not reproduced", figure="report_table1",
        headline=True)
    say.save()  # at the end of the notebook (each call also saves: a failed cell keeps the rest)

A template's fields are Python's format fields, with four more specs: `{x:abs.1f}` (the absolute
value), `{x:samples}` (3×10^6), `{x:number}` (a published value as read) and `{x:word/word[/word]}`,
the word that follows x's sign: the first for x > 0 (or True), the second for x < 0 (or False), the
third, where given, for x == 0 (else the second). A missing value (None, NaN) is refused: a notebook
states another finding that says why. The detail behind a finding (per-Nz gaps, every estimator)
goes in a table the notebook shows above it.

Helpers for numbers as text: `direction` (which way is better for a metric: written once, the
scorecard reads it too), `plus_minus` and `mean_sd` ("mean ± sd (n runs)", the one place it is
formatted), `samples`, `number`, `nats`, `count` and `listing`; `compare`, `versus`, `moves` and
`row_against` are the older phrase builders, kept for tables and captions.
"""
import json
import math
import re
import string
from pathlib import Path

from aevb.files import atomic_write_text

FOLDER = "findings"  # below the profile's figures folder


def anchor(notebook, key):
    """The HTML id of a finding in its rendered notebook, e.g. 'finding-scorecard-claim2'."""
    return "finding-" + re.sub(r"[^a-z0-9]+", "-", f"{notebook}-{key}".lower()).strip("-")


class Findings:
    """The findings of one figure notebook: call it to state one, `save()` to write them all."""

    def __init__(self, notebook, figures_dir, display=True):
        self.notebook, self.path, self.display = notebook, Path(
            figures_dir) / FOLDER / f"{notebook}.json", display
        self.items = {}

    def __call__(self, key, template, headline=False, title=None, figure=None, **values):
        """State a finding under `key`: the Markdown `template` filled with `values` (see `fill`),
        shown at once in the notebook with an anchor the index links to; `figure`: the figure or
        table (a name in aevb.figures' FIGURES or CSV_TABLES) that shows it; `headline`: also listed
        at the top of the index and in RESULTS.md, under `title`, beside its figure."""
        from aevb.figures import CSV_TABLES, FIGURES
        if not re.fullmatch(r"[a-z0-9_]+", key):
            raise ValueError(f"finding key {key!r}: use lower-case letters, digits and _")
        if figure is not None and figure not in FIGURES and figure not in CSV_TABLES:
            raise KeyError(f"finding {key}: {figure!r} is not a figure or table of aevb.figures")
        try:
            text = fill(template, **values)
        except (KeyError, ValueError) as error:
            raise ValueError(f"finding {self.notebook}/{key}: {error}") from None
        self.items[key] = {
            "key": key, "text": text, "headline": bool(headline), "title": title or "",
            "notebook": self.notebook, "anchor": anchor(self.notebook, key), "figure": figure or "",
            "template": template
        }
        if self.display:
            from IPython.display import Markdown, display
            where = f" (*{figure}*)" if figure else ""
            display(Markdown(f'<a id="{anchor(self.notebook, key)}"></a>\n\n{text}{where}'))
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
    """The headline findings in reading order: the scorecard's first (the verdicts), then each
    figure notebook's in the order aevb.figures lists them. What the index page and RESULTS.md
    list."""
    from aevb.figures import notebooks
    order = ["scorecard", *(n for n in notebooks() if n != "scorecard")]
    return [f for f in load(figures_dir, order) if f["headline"]]


def details(figures_dir, headline):
    """The findings that detail `headline`: the others of its notebook keyed '<its key>_...', in the
    order they were said. RESULTS.md sets them under it."""
    return [f for f in load(figures_dir, [headline["notebook"]])
            if not f["headline"] and f["key"].startswith(f"{headline['key']}_")]


# ---- templates: the sentence by hand, its numbers and their words from the runs ------------------

def sign_word(value, words):
    """The word of `words` (positive, negative[, zero]) that follows value's sign; True counts as
    positive."""
    if not 2 <= len(words) <= 3:
        raise ValueError(
            "a sign's words are 'positive/negative' or 'positive/negative/zero', not "
            f"{'/'.join(words)!r}"
        )
    if isinstance(value, bool):
        return words[0] if value else words[1]
    if value > 0:
        return words[0]
    return words[2] if value == 0 and len(words) == 3 else words[1]


class _Template(string.Formatter):
    def get_value(self, key, args, kwargs):
        if key not in kwargs:
            raise KeyError(f"the template names {{{key}}}, which no value fills")
        value = kwargs[key]
        if missing(value):
            raise ValueError(
                f"the value of {{{key}}} is missing; state a finding that says why instead")
        return value

    def format_field(self, value, spec):
        if "/" in spec:
            return sign_word(value, spec.split("/"))
        if spec.startswith("abs"):
            return format(abs(value), spec[3:])
        if spec == "samples":
            return samples(value)
        if spec == "number":
            return number(value)
        return format(value, spec)


def fill(template, **values):
    """A finding's template with its fields filled (see the module's docstring for the specs):
    fill("IWAE {lead:leads/trails} the VAE by {lead:abs.2f} nats.", lead=-0.3) ->
    'IWAE trails the VAE by 0.30 nats.'"""
    return _Template().format(template, **values)


def fields(template):
    """[(name, spec)] of a template's fields, in order."""
    return [(name, spec or "") for _, name, spec, _ in string.Formatter().parse(template)
            if name is not None]


def words(text):
    """The number of words a reader reads in a finding (Markdown emphasis and links' targets
    aside)."""
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return len(re.findall(r"[^\s*`]+", re.sub(r"[*`]", "", text)))


# ---- words the numbers decide --------------------------------------------------------------------

def missing(*values):
    """Whether any value is None or NaN (a run this profile lacks, a metric a run did not log)."""
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def nats(value, digits=1, signed=False):
    """'3.2 nats' (or '+3.2 nats')."""
    return f"{value:{'+' if signed else ''}.{digits}f} nats"


def direction(metric):
    """+1 where a higher value of a published_numbers.csv `metric` is better (a bound, a
    log-likelihood), -1 where a lower one is (a loss, '-test_elbo'; minutes), 0 where neither is (a
    KL: a different split of the same bound; a claim, whose test says what is better)."""
    key = metric.lstrip("-")
    if key.endswith("_kl") or not metric or metric.startswith("claim:"):
        return 0
    return -1 if metric.startswith("-") or key == "minutes_per_million" else 1


def orientation(metric):
    """`direction` as compare's higher_is_better: True for a bound or a log p(x) ('test_elbo'),
    False for a loss ('-test_elbo': negated), None for a KL (neither: 'above'/'below')."""
    return {1: True, -1: False, 0: None}[direction(metric)]


def _side(diff, higher_is_better):
    """The word for a signed difference `diff` = ours - theirs."""
    if higher_is_better is None:
        return "above" if diff > 0 else "below"
    return "ahead of" if diff * (1 if higher_is_better else -1) > 0 else "behind"


def margin(difference, tolerance):
    """How far inside its tolerance a difference lies, in nats: >= 0 within it, < 0 beyond. The one
    rule of 'within the tolerance' (exactly at it counts as within): the scorecard's verdicts,
    `compare` and a finding's {margin:within/beyond/within} field all read it."""
    return float(tolerance) - abs(difference)


def compare(ours, published, tolerance, higher_is_better=True, digits=1, of="theirs"):
    """How `ours` stands against `published` given a tolerance, as words ending in `of`: 'within the
    2-nat tolerance of theirs (0.4 nats ahead)', '3.1 nats behind theirs', '5.0 nats ahead of
    theirs'. higher_is_better: True for a bound or log p(x), False for a loss (then a lower value is
    ahead), None for neither ('above'/'below'). Exactly at the tolerance counts as within it, as the
    scorecard's verdict does; a difference that rounds to 0 at `digits` is 'level with'."""
    if missing(ours, published):
        return f"not comparable with {of} (a value is missing)"
    diff = ours - published
    shown = round(abs(diff), digits)
    side = _side(diff, higher_is_better)
    if tolerance is not None and not missing(tolerance) and margin(diff, tolerance) >= 0:
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
    """What a change does to a value, as words: 'raises it by 2.4 nats (-121.2 to -118.8)', 'lowers
    it by ...', or 'leaves it level (-121.2 and -121.3)' where the change is within `tie` or rounds
    to 0."""
    if missing(before, after):
        return "cannot be judged (a value is missing)"
    diff = after - before
    ends = f"{before:.{digits}f} to {after:.{digits}f}"
    if abs(diff) <= tie or not round(abs(diff), digits):
        return f"leaves {what} level ({before:.{digits}f} and {after:.{digits}f})"
    return f"{'raises' if diff > 0 else 'lowers'} {what} by {abs(diff):.{digits}f} nats ({ends})"


def below_peak(end, peak, digits=1):
    """Where a run's curve ends against its own peak, as words: '43.7 nats below its peak', or 'at
    its peak' where the difference rounds to 0 at `digits` (a curve still rising at its end)."""
    if missing(end, peak):
        return "against its peak: cannot be judged (a value is missing)"
    if end > peak:
        raise ValueError(f"an end ({end}) above its peak ({peak}): the peak is the highest value")
    fall = round(peak - end, digits)
    return "at its peak" if not fall else f"{fall:.{digits}f} nats below its peak"


def plus_minus(mean, sd, n, digits=2, unit="run"):
    """'-110.60 ± 1.03 (3 runs)', '-110.60 (1 run)', or '-110.60 ± 1.03' / '-110.60' with unit None:
    the one place a mean over seeds is written ('' for a missing mean)."""
    if missing(mean):
        return ""
    n = 0 if missing(n) else int(n)
    text = f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if n > 1 and not missing(sd) else "")
    return text + (f" ({count(n, unit)})" if unit and n else "")


def mean_sd(values, digits=2, unit="seed"):
    """'-110.60 ± 1.03 (3 seeds)' or '-110.60 (1 seed)' for a list of values (NaNs dropped)."""
    values = [v for v in values if not missing(v)]
    if not values:
        return "no value"
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean)**2 for v in values) /
                   (len(values) - 1)) if len(values) > 1 else math.nan
    return plus_minus(mean, sd, len(values), digits, unit)


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
        return (
            f"not run at this scale (ours trained {samples(row['samples_trained'])} samples, "
            "theirs "
            f"{samples(row['samples_published'])})")
    ours = plus_minus(row["ours"], row["ours_sd"], n, unit="seed" if n > 1 else None)
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
