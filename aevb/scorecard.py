"""Published numbers beside ours, and the verdicts (notebooks/scorecard.ipynb tells the story).

published_numbers.csv holds every number and claim that the replication report (Andriciuc, 2025),
Kingma & Welling (2013) and Burda et al. (2015) publish, with the protocol, runs and tolerance each
is judged by. A row's `runs` is a query of the experiment grid, 'dataset=mnist algorithm=aevb
latent_dim=20', taken under the row's protocol (see `aevb.grid.select`). It names no seed, and a
claim "at every Nz" names no Nz: the grid is the one list of runs, so a seed or an Nz added there is
judged here without an edit. A row is judged on the runs its query selects whose folder holds a
finished run (metrics.json); with several seeds, ours is their mean ± sd and the verdict judges the
mean.

Verdicts: `reproduced` (within the tolerance, or the claim's test holds), `not reproduced`, `not run
at this scale` (our runs trained fewer than half the published samples, or there is no such run),
`out of scope` (models this project does not implement) and `n/a (hardware)` (compute time).
"""
import csv
import math
import re
import statistics
from typing import NamedTuple

import pandas as pd

import aevb.grid
import aevb.paper_scale
from aevb import paths
# direction: which way is better, written once there
from aevb.findings import direction, listing, margin, plus_minus  # noqa: F401
from aevb.runs import load_summary

# scorecard.csv's columns, in order (scripts/build_html.py reads them by name)
COLUMNS = [
    "source", "what", "published", "ours", "ours_sd", "n_runs", "difference", "better_by",
    "tolerance", "in_tolerances", "protocol", "samples_published", "samples_trained", "verdict",
    "note", "runs", "id"
]
# A verdict whose difference lies within this share of its tolerance from the tolerance itself says
# so: one more seed could carry it across.
EDGE = 0.1
LOG_LIKELIHOOD_COLUMNS = [
    "run", "protocol", "algorithm", "Nz", "samples", "points", "k", "test_log_px_is",
    "test_log_px_is_se", "test_elbo", "gap", "test_log_px_refit", "test_log_px_refit_se",
    "test_log_px_appd", "test_log_px_appd_se"
]
# A metric estimated on the first points of a split: the config key that says how many (scorecard
# rows say it)
POINTS = {"train_log_px_appd": "log_px_points", "test_log_px_appd": "log_px_points",
          "-test_log_px_is": "is_points"}
# a claim's (values, runs used, holds, detail) when its runs are missing
NOT_JUDGED = ((), (), False, "")


# ---- the published numbers and the runs ----------------------------------------------------------

class Verdict(NamedTuple):
    color: str  # its markers in figures
    background: str  # its cells in tables and pages


# every verdict, in the order tables list them, with its colours (the one place they are written)
VERDICTS = {
    "reproduced": Verdict("tab:green", "#d9f2d9"),
    "not reproduced": Verdict("tab:red", "#f8d7d7"),
    "not run at this scale": Verdict("tab:gray", "#eeeeee"),
    "out of scope": Verdict("tab:gray", "#eeeeee"),
    "n/a (hardware)": Verdict("tab:gray", "white"),
}


def paper_of(source):
    """The paper a published row comes from: its source up to the year, 'Burda, Grosse &
    Salakhutdinov (2015), Table 1' -> 'Burda, Grosse & Salakhutdinov (2015)'."""
    match = re.match(r".*?\(\d{4}\)", source)
    return match.group(0) if match else source.split(",")[0].strip()


def verdicts_by_paper(card_rows):
    """{paper: Counter of verdicts} of scorecard rows (dicts with source and verdict), papers in
    their order."""
    from collections import Counter
    out = {}
    for row in card_rows:
        out.setdefault(paper_of(row["source"]), Counter())[row["verdict"]] += 1
    return out


# A verdict whose difference lies within a quarter of its tolerance of the tolerance's edge (|ours -
# published| between 0.75 and 1.25 tolerances) is one another seed could turn: RESULTS.md says so.
NEAR_EDGE = 0.25


def near_edge(row):
    """Whether a judged row's verdict (reproduced or not) sits near its tolerance's edge, in units
    of its tolerance (`in_tolerances`, as scorecard.csv holds it): see NEAR_EDGE."""
    try:
        units = float(row.get("in_tolerances") or "nan")
    except ValueError:
        return False
    return row["verdict"] in ("reproduced", "not reproduced") and abs(abs(units) - 1) <= NEAR_EDGE


def published_numbers(path=paths.PUBLISHED_NUMBERS):
    """published_numbers.csv as {id: row}, in file order: `published` a float (None for a claim
    without a number), `samples` a float, every other field its text."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["published"] = float(row["published"]) if row["published"] else None
        row["samples"] = float(row["samples"])
    return {row["id"]: row for row in rows}


def query_fields(query):
    """A row's `runs` query as {field: value text}: 'dataset=mnist latent_dim=20' -> {'dataset':
    'mnist', ...}."""
    return dict(part.partition("=")[::2] for part in query.split())


def lookup(published, metric, samples=None, source=None, protocol=None, **query):
    """The one published row (a dict of published_numbers()) with this `metric` (and `samples`, and
    a `source` containing the given text, and `protocol`) whose runs query names these fields'
    values, e.g. lookup(published, "test_elbo", 1e8, dataset="mnist", algorithm="aevb",
    latent_dim=20): Kingma & Welling's Figure 2 at 10^8 samples. A lookup that finds no row or
    several is refused, naming them."""
    wanted = {key: str(value) for key, value in query.items()}
    found = [
        row for row in published.values()
        if row["metric"] == metric and (samples is None or row["samples"] == float(samples)) and (
            source is None or source in row["source"]) and (
                protocol is None or row["protocol"] == protocol) and all(
                    query_fields(row["runs"]).get(k) == v for k, v in wanted.items())
    ]
    if len(found) != 1:
        raise LookupError(
            f"published_numbers.csv: {len(found)} rows (not one) with metric {metric!r}, samples "
            f"{samples}, source {source!r}, protocol {protocol!r} and {wanted}: "
            f"{', '.join(r['id'] for r in found) or 'none'}"
        )
    return found[0]


def tolerance_of(row):
    """A row's tolerance in nats, absolute (a log-density's zero is arbitrary, so never relative to
    the published value): from the figure's reading error and the spread of seeds; NaN for a row
    without one (compute time, out of scope)."""
    return float(row["tolerance"]) if row["tolerance"] else math.nan


def on_the_edge(difference, tolerance):
    """Whether a difference lies within EDGE of its tolerance from the tolerance (either side)."""
    return abs(abs(difference) - tolerance) <= EDGE * tolerance


def finished_runs(runs_dir, grid=None):
    """{Run: summary (aevb.runs.load_summary)} for every run of the grid, in its order, whose folder
    in runs_dir holds a finished run. A folder the grid does not list is not read."""
    return {run: load_summary(run.folder(runs_dir)) for run in aevb.grid.runs(grid=grid)
            if (run.folder(runs_dir) / "metrics.json").exists()}


def selected_runs(row, grid=None):
    """The grid's runs that a row's `runs` query selects under the row's protocol, finished or
    not."""
    return aevb.grid.select(row["runs"], row["protocol"], grid) if row["runs"] else []


def value_at(run, metric, samples):
    """A run's `metric` ('-' in front: negated, e.g. '-test_elbo', a loss) after `samples` training
    samples.

    Published values are read off curves at a sample count (Kingma & Welling's Figure 2 at 3x10^6
    and 10^8), so a run that trained past it gives its value there: interpolated on a log scale, the
    figure's axis, between the two evaluations around it. A run that trained about that many samples
    gives its final value; so does a metric only its metrics.json holds (test_log_px_is).
    """
    sign, key = (-1, metric[1:]) if metric.startswith("-") else (1, metric)
    metrics, history = run["metrics"], run["history"]
    if key == "minutes_per_million":
        return metrics["wall_time"] / 60 / (metrics["samples"] / 1e6)
    if metrics["samples"] <= 1.01 * samples or key not in history[0]:
        return sign * {**history[-1], **metrics}[key]  # e.g. running_elbo is in the history only
    points = [(row["samples"], row[key]) for row in history]
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= samples <= s1:
            t = math.log(samples / s0) / math.log(s1 / s0)
            return sign * (v0 + t * (v1 - v0))
    return sign * points[0][1]  # before the first evaluation: the first one


# ---- the claims: each a test on several runs; the value is what the test measures ----------------
# A claim returns (values, runs used, whether it holds, what it measured for the note).

def mean_by_latent_dim(values):
    """{Nz: mean} of {Run: value}: one number per Nz, however many seeds the grid has there."""
    by_nz = {}
    for run, value in values.items():
        by_nz.setdefault(run.latent_dim, []).append(value)
    return {nz: statistics.mean(v) for nz, v in sorted(by_nz.items())}


def gaps_text(gaps):
    return "gaps by Nz: " + ", ".join(f"{nz}: {gap:+.2f}" for nz, gap in sorted(gaps.items()))


def paired_gaps(runs, finished, first, second, metric, samples):
    """{run of `first`: metric(first) - metric(second)} over the finished pairs of the two
    algorithms with the same dataset, Nz and seed, and the runs used. Pairing by seed keeps a
    missing run from skewing a mean of the other algorithm's seeds."""
    done = {(r.algorithm, r.dataset, r.latent_dim, r.seed): r for r in runs if r in finished}
    gaps, used = {}, []
    for (algorithm, *rest), a in done.items():
        b = done.get((second, *rest))
        if algorithm == first and b is not None:
            gaps[a] = value_at(finished[a], metric, samples) - value_at(
                finished[b], metric, samples)
            used += [a, b]
    return gaps, used


def adam_gaps(row, runs, finished, published):
    """{run: our Adam test bound at the row's samples minus Kingma & Welling's Adagrad one at 10^8
    at its Nz}."""
    gaps = {}
    for run in runs:
        if run in finished:
            kingma = lookup(published, "test_elbo", 1e8, dataset=run.dataset, algorithm="aevb",
                            latent_dim=run.latent_dim)["published"]
            gaps[run] = value_at(finished[run], "test_elbo", int(row["samples"])) - kingma
    return gaps


def adam_vs_kingma(row, runs, finished, published):
    """The report's claim 1: Kingma & Welling's results replicate in 50 epochs with Adam. Per Nz,
    our Adam test bound at 3x10^6 samples (seeds averaged) minus Kingma & Welling's Adagrad one at
    10^8 (their Figure 2); the value is the largest gap, and the claim holds when every gap is
    within the tolerance. Judged on every Nz the query selects or not at all: on a subset it could
    hold where the whole fails."""
    # run -> its gap to the published bound at its Nz
    gaps = adam_gaps(row, runs, finished, published)
    by_nz = mean_by_latent_dim(gaps)
    if not by_nz or set(by_nz) != {run.latent_dim for run in runs}:
        return NOT_JUDGED
    worst = max(by_nz.values(), key=abs)
    return [worst], list(gaps), abs(worst) <= tolerance_of(row), gaps_text(by_nz)


def ws_minus_aevb_loss(row, runs, finished, published):
    """The report's claim 2: wake-sleep is "still comparable" with AEVB (its Table 1: test loss
    101.16 against 101.11). Wake-sleep's test loss minus AEVB's, seed by seed; holds when the mean
    gap is within the tolerance of the report's 0.06. The report's gap is between two AEVB runs;
    ours is between the true wake-sleep algorithm (Hinton et al., 1995) and AEVB."""
    gaps, used = paired_gaps(runs, finished, "wake_sleep", "aevb", "-test_elbo",
                             int(row["samples"]))
    mean = statistics.mean(gaps.values()) if gaps else math.nan
    return list(gaps.values()), used, abs(mean - row["published"]) <= tolerance_of(row), ""


def aevb_minus_ws_log_px(row, runs, finished, published):
    """The report's claim 3: AEVB's random samples look better than wake-sleep's (its Figures 1, 2).
    A qualitative claim; we measure the test log-likelihood by importance sampling (Burda et al.),
    AEVB minus wake-sleep seed by seed, and it holds when the mean is above the tolerance."""
    gaps, used = paired_gaps(runs, finished, "aevb", "wake_sleep", "test_log_px_is",
                             int(row["samples"]))
    return list(
        gaps.values()), used, bool(gaps) and statistics.mean(gaps.values()) > tolerance_of(row), ""


def aevb_beats_ws(row, runs, finished, published):
    """Kingma & Welling's Figure 2: AEVB reaches a higher lower bound than wake-sleep at every Nz.
    Per Nz, the test bound of AEVB minus wake-sleep (seed-matched, seeds averaged); the value is the
    smallest gap, and the claim holds when it is above the tolerance. "Every Nz" is every Nz at
    which the grid has both algorithms under the row's protocol, judged on all of them or not at
    all."""
    gaps, used = paired_gaps(runs, finished, "aevb", "wake_sleep", "test_elbo", int(row["samples"]))
    by_nz = mean_by_latent_dim(gaps)
    both = ({r.latent_dim for r in runs if r.algorithm == "aevb"}
            & {r.latent_dim for r in runs if r.algorithm == "wake_sleep"})
    if not by_nz or set(by_nz) != both:
        return NOT_JUDGED
    smallest = min(by_nz.values())
    return [smallest], used, smallest > tolerance_of(row), gaps_text(by_nz)


def fewest_samples(rows, ids):
    """The fewest training samples the runs of the scorecard rows `ids` trained (`rows`: id -> row,
    as card.set_index("id").to_dict("index") gives them); 0 where a row has no run."""
    def trained(row):
        value = row.get("samples_trained")
        return 0 if value is None or value == "" or math.isnan(float(value)) else int(value)
    return min(trained(rows[i]) for i in ids)


def gaps_by_latent_dim(row, runs_dir, published=None, grid=None):
    """{Nz: gap} behind a claim judged per Nz (the report's claim 1: ours minus Kingma & Welling's
    at 10^8; AEVB beats wake-sleep: AEVB minus wake-sleep), seeds averaged, for the tables beside
    its finding; {} for another row or where its runs are missing. `row`: a published row or its
    id."""
    published = published_numbers() if published is None else published
    row = published[row] if isinstance(row, str) else row
    runs, finished = selected_runs(row, grid), finished_runs(runs_dir, grid)
    if row["metric"] == "claim:adam_vs_kingma":
        return mean_by_latent_dim(adam_gaps(row, runs, finished, published))
    if row["metric"] == "claim:aevb_beats_ws":
        return mean_by_latent_dim(
            paired_gaps(runs, finished, "aevb", "wake_sleep", "test_elbo", int(row["samples"]))[0])
    return {}


CLAIMS = {"adam_vs_kingma": adam_vs_kingma, "ws_minus_aevb_loss": ws_minus_aevb_loss,
          "aevb_minus_ws_log_px": aevb_minus_ws_log_px, "aevb_beats_ws": aevb_beats_ws}


# ---- the central answer: AEVB against the true wake-sleep, per protocol and Nz -------------------
# The protocols that train both algorithms at several Nz or seeds: Kingma & Welling's as released,
# by the paper's text alone, and the report's
ANSWER_PROTOCOLS = ("kingma", "kingma-paper", "report")
ANSWER_LABELS = {"kingma": "Kingma & Welling's, as released",
                 "kingma-paper": "Kingma & Welling's, the paper's text alone",
                 "report": "the report's (Adam)",
                 "kingma at 10^8": "Kingma & Welling's, as released, at 10^8 (published runs)",
                 "published": "Kingma & Welling's Figure 2 (their values)"}
ANSWER_COLUMNS = ["protocol", "dataset", "Nz", "n", "gap", "gap_sd", "samples", "seeds"]


def aevb_minus_ws(runs_dir, grid=None, protocols=ANSWER_PROTOCOLS):
    """AEVB's final test lower bound minus the true wake-sleep's, seed by seed (same protocol,
    dataset, Nz and seed), per (protocol, dataset, Nz): the number of seed pairs n, the mean gap and
    its sd over the pairs (NaN for one pair), the fewest samples trained and the seeds. Positive:
    AEVB's bound is higher. One DataFrame with ANSWER_COLUMNS."""
    finished = finished_runs(runs_dir, grid)
    rows = []
    for protocol in protocols:
        runs = aevb.grid.runs(grid=grid, protocol=protocol)
        done = {(r.algorithm, r.dataset, r.latent_dim, r.seed): finished[r] for r in runs
                if r in finished}
        cells = {}
        for (algorithm, dataset, nz, seed), run in done.items():
            other = done.get(("wake_sleep", dataset, nz, seed))
            if algorithm == "aevb" and other is not None:
                gap = run["metrics"]["test_elbo"] - other["metrics"]["test_elbo"]
                samples = min(run["metrics"]["samples"], other["metrics"]["samples"])
                cells.setdefault((dataset, nz), []).append((seed, gap, samples))
        for (dataset, nz), pairs in sorted(cells.items()):
            gaps = [g for _, g, _ in pairs]
            rows.append({"protocol": protocol, "dataset": dataset, "Nz": nz, "n": len(gaps),
                         "gap": statistics.mean(gaps),
                         "gap_sd": statistics.stdev(gaps) if len(gaps) > 1 else math.nan,
                         "samples": min(s for *_, s in pairs),
                         "seeds": " ".join(str(seed) for seed, *_ in sorted(pairs))})
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


def published_gaps(samples, published=None, source="Kingma & Welling (2013), Figure 2", within=3.0):
    """Kingma & Welling's own AEVB minus wake-sleep, test lower bound, per (dataset, Nz), at the
    sample count they publish nearest `samples` for that dataset if it is within a factor `within`
    of it (their Figure 2 is read at 3x10^6 and 10^8 on MNIST, at 10^8 on Frey Face): rows of
    ANSWER_COLUMNS with protocol 'published', n 0 (a reading, no seeds) and that count as
    samples."""
    published = published_numbers() if published is None else published
    values = {}  # (dataset, Nz, algorithm, samples) -> value
    for r in published.values():
        if r["source"] == source and r["metric"] == "test_elbo":
            q = query_fields(r["runs"])
            key = (q["dataset"], int(q["latent_dim"]), q["algorithm"], r["samples"])
            values[key] = r["published"]
    out = []
    for dataset in dict.fromkeys(d for d, *_ in values):
        counts = {n for d, _, _, n in values if d == dataset}
        at = min(counts, key=lambda n: abs(math.log(n / max(samples, 1))))
        if not 1 / within <= at / max(samples, 1) <= within:
            continue
        for nz in sorted({nz for d, nz, _, n in values if d == dataset and n == at}):
            ours = {a: values.get((dataset, nz, a, at)) for a in ("aevb", "wake_sleep")}
            if None not in ours.values():
                out.append({"protocol": "published", "dataset": dataset, "Nz": nz, "n": 0,
                            "gap": ours["aevb"] - ours["wake_sleep"], "gap_sd": math.nan,
                            "samples": int(at), "seeds": ""})
    return pd.DataFrame(out, columns=ANSWER_COLUMNS)


def gap_mean_sd(row):
    """'+4.5 ± 0.3', or '+4.5' for one seed pair: one row of aevb_minus_ws's mean gap."""
    sd = f" ± {row['gap_sd']:.1f}" if row["n"] > 1 else ""
    return f"{row['gap']:+.1f}{sd}"


def gap_text(row):
    """'+4.5 ± 0.3 (n = 3)', or '+4.5 (n = 1)': one row of aevb_minus_ws."""
    return f"{gap_mean_sd(row)} (n = {row['n']})"


def gap_span(rows):
    """A protocol's rows of aevb_minus_ws in a few words, for a finding: '+5.1 ± 0.4 (Nz 20, n 3)'
    for one row, '+4.5 to +98.4 (Nz 3-200, n 1-3)' for several (the smallest and largest mean gap,
    the Nz and the seed pairs they span); the table and the figure give each row."""
    rows = list(rows.to_dict("records") if hasattr(rows, "to_dict") else rows)
    if not rows:
        return "not run"
    def span(values):
        lo, hi = min(values), max(values)
        return f"{lo}" if lo == hi else f"{lo}-{hi}"
    nz, n = span([r["Nz"] for r in rows]), span([r["n"] for r in rows])
    if len(rows) == 1:
        return f"{gap_mean_sd(rows[0])} (Nz {nz}, n {n})"
    gaps = [r["gap"] for r in rows]
    return f"{min(gaps):+.1f} to {max(gaps):+.1f} (Nz {nz}, n {n})"


# ---- the scorecard -------------------------------------------------------------------------------

def score(row, finished, published, grid=None, paper_scale=None):
    """One scorecard row (a dict of COLUMNS) for a published row, judged on `finished` (see
    finished_runs); `published` is every published row (claim 1 reads Kingma & Welling's bounds from
    it). A row that `finished` cannot judge at its scale is judged on the published paper-scale runs
    (`paper_scale`: aevb.paper_scale.load's) that trained at least half its samples, where they
    can; its note then says where they came from."""
    out = judged(row, finished, published, grid)
    if out["verdict"] == "not run at this scale" and paper_scale:
        at_scale = {run: s for run, s in paper_scale.items()
                    if s["metrics"]["samples"] >= 0.5 * int(row["samples"])}
        again = judged(row, at_scale, published, grid) if at_scale else out
        if again["verdict"] != "not run at this scale":
            used = [at_scale[run] for run in at_scale if run.name in again["runs"].split()]
            return {**again, "note": f"{again['note']}; {aevb.paper_scale.described(used)}"}
    return out


def judged(row, finished, published, grid=None):
    """score's row on `finished` alone."""
    samples = int(row["samples"])
    out = {
        "source": row["source"], "what": row["what"], "published": row["published"],
        "ours": math.nan, "ours_sd": math.nan, "n_runs": 0, "difference": math.nan,
        "better_by": math.nan, "tolerance": row["tolerance"], "in_tolerances": math.nan,
        "protocol": row["protocol"], "samples_published": samples, "samples_trained": None,
        "verdict": "", "note": row["note"], "runs": "", "id": row["id"]
    }
    if not row["metric"]:
        return {**out, "verdict": "out of scope"}
    runs = selected_runs(row, grid)
    if row["metric"].startswith("claim:"):
        name = row["metric"].removeprefix("claim:")
        if name not in CLAIMS:
            raise ValueError(
                f"unknown claim {name!r} in published row {row['id']}; known: {', '.join(CLAIMS)}")
        values, used, holds, detail = CLAIMS[name](row, runs, finished, published)
        if detail:
            out["note"] = f"{row['note']}; {detail}"
    else:
        used = [run for run in runs if run in finished]
        values, holds = [value_at(finished[run], row["metric"], samples) for run in used], None
    if not used:
        return {
            **out, "verdict": "not run at this scale",
            "note": "no such run in this profile; " + row["note"]
        }
    trained = min(finished[run]["metrics"]["samples"] for run in used)
    points = []
    if row["metric"] in POINTS:
        points = sorted({finished[run]["config"].get(POINTS[row["metric"]]) for run in used}
                        - {None, 0})
    if points:  # how many points our estimate averages: the runs' config says, per profile
        out["what"] = f"{row['what']}; ours on the first {listing(f'{p:,}' for p in points)} points"
    ours = statistics.mean(values)
    out.update(ours=ours, ours_sd=statistics.stdev(values) if len(values) > 1 else math.nan,
               n_runs=len(values), samples_trained=trained,
               runs=" ".join(sorted({run.name
                                     for run in used})))
    if row["published"] is not None:
        out["difference"] = ours - row["published"]
        if direction(row["metric"]):  # positive: ours is better, whichever way the metric points
            out["better_by"] = direction(row["metric"]) * out["difference"]
        if tolerance_of(row) > 0:  # else NaN: no tolerance (compute time), or a claim's threshold 0
            out["in_tolerances"] = out["difference"] / tolerance_of(row)
    if row["metric"] == "minutes_per_million":
        out["verdict"] = "n/a (hardware)"
    elif trained < 0.5 * samples:  # a 3x10^6-sample run cannot judge a 10^8-sample number
        out["verdict"] = "not run at this scale"
    elif holds is None:
        within = margin(out["difference"], tolerance_of(row)) >= 0
        out["verdict"] = "reproduced" if within else "not reproduced"
        if on_the_edge(out["difference"], tolerance_of(row)):
            out["note"] = (f"{out['note']}; on the edge: {abs(out['difference']):.2f} against "
                           f"the tolerance {tolerance_of(row):g}, so one more seed could carry the "
                           "verdict across")
        # then one seed could land on either side of the verdict
        if out["ours_sd"] > tolerance_of(row):
            out["note"] = (f"{out['note']}; our seeds spread wider (sd {out['ours_sd']:.2f}) "
                           "than the tolerance")
    else:
        out["verdict"] = "reproduced" if holds else "not reproduced"
    return out


def build(runs_dir, published=None, grid=None, paper_scale=paths.PAPER_SCALE):
    """The scorecard: one row per published row, in its order, with COLUMNS (what scorecard.csv
    holds). `published`: published_numbers()' dict (None: published_numbers.csv); `grid`: a grid
    module (None: aevb.grid); `paper_scale`: the folder of published paper-scale runs that judge
    the rows runs_dir's runs cannot (None: none)."""
    published = published_numbers() if published is None else published
    finished = finished_runs(runs_dir, grid)
    at_scale = aevb.paper_scale.load(paper_scale, grid) if paper_scale else {}
    rows = [score(row, finished, published, grid, at_scale) for row in published.values()]
    return pd.DataFrame(rows, columns=COLUMNS).astype({"samples_trained": "Int64"})


def test_log_likelihoods(runs_dir, grid=None):
    """Every finished run with a test log-likelihood by importance sampling (test_log_px_is), beside
    its test lower bound (log p(x) >= ELBO, and the gap is how loose the bound is) and, where the
    run has them, the estimates that do not use its own encoder: IS with a refitted encoder, and
    App. D's."""
    rows = []
    for run, summary in finished_runs(runs_dir, grid).items():
        metrics, config = summary["metrics"], summary["config"]
        # (Figure 3's runs log theirs per evaluation)
        if "test_log_px_is" in metrics and "is_points" in config:
            test_elbo = metrics.get("test_elbo", math.nan)
            rows.append({
                "run": run.name,
                "protocol": config["protocol"],
                "algorithm": config["algorithm"],
                "Nz": config["latent_dim"],
                "samples": metrics["samples"],
                "points": config["is_points"],
                "k": config["is_k"],
                "test_log_px_is": metrics["test_log_px_is"],
                "test_log_px_is_se": metrics["test_log_px_is_se"],
                "test_elbo": test_elbo,
                "gap": metrics["test_log_px_is"] - test_elbo,
                # the shared estimators, where the run has them: IS with a refitted
                # encoder, App. D's
                **{key: metrics.get(key, math.nan)
                   for key in LOG_LIKELIHOOD_COLUMNS[-4:]}
            })
    return pd.DataFrame(rows, columns=LOG_LIKELIHOOD_COLUMNS)


# ---- for the notebook's narrative, table and figure ----------------------------------------------

def number_text(value, digits=2):
    return "" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def number_or_nan(text):
    """A number read from a CSV cell: float(text), NaN for an empty or missing one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def ours_cell(row, counted=True):
    """A scorecard.csv row's value (its cells are text) as 'mean ± sd (n runs)', or 'value';
    counted=False: without '(n runs)', for a table that has a column of its own for n."""
    n_runs = number_or_nan(row["n_runs"])
    return plus_minus(number_or_nan(row["ours"]), number_or_nan(row.get("ours_sd")), n_runs,
                      unit="run" if counted and n_runs > 1 else None)


def verdict_css(selector="td.{verdict}"):
    """CSS giving each verdict its colour (VERDICTS, the one place they are written), for HTML
    pages whose verdict cells have the verdict as a class ('not reproduced' -> 'not-reproduced')."""
    return "\n".join(f"{selector.format(verdict=v.replace(' ', '-'))} {{ background: {color}; }}"
                     for v, color in ((v, d.background) for v, d in VERDICTS.items()))


def styled(card):
    """The scorecard as the notebook shows it: numbers rounded, sample counts short, the verdict
    coloured."""
    shown = card.assign(
        published=["" if pd.isna(p) else f"{p:.10g}" for p in card.published],
        ours=[
            plus_minus(o, sd, n, unit=None)
            for o, sd, n in zip(card.ours, card.ours_sd, card.n_runs)
        ],
        difference=[number_text(d) for d in card.difference],
        samples_trained=["" if pd.isna(s) else f"{s:,}" for s in card.samples_trained],
        samples_published=[f"{s:.0e}".replace("e+0", "e") for s in card.samples_published],
    )[[
        "source", "what", "published", "ours", "n_runs", "difference", "tolerance", "protocol",
        "samples_published", "samples_trained", "verdict", "note"
    ]]
    return (shown.style.map(lambda v: f"background-color: {VERDICTS[v].background}",
                            subset=["verdict"]).hide(axis="index"))


def judged_differences(card, verdicts=("reproduced", "not reproduced")):
    """The rows with a published value, a tolerance and a direction (not a KL) that were judged at
    their scale (or have one of `verdicts`), with `ratio`: the row's difference in units of its
    tolerance (`in_tolerances`), signed by `better_by` (positive: ours is better), so that bounds,
    losses and percentages share one axis."""
    judged = card[card.verdict.isin(list(verdicts)) & card.better_by.notna()
                  & card.in_tolerances.notna()]
    # +1: ours is better
    better = judged.better_by.astype(float).map(lambda b: math.copysign(1.0, b) if b else 0.0)
    return judged.assign(ratio=better * judged.in_tolerances.astype(float).abs())
