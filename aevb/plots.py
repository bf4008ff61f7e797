"""The figure notebooks' plots that take more than a few lines, each a function a user can call on
data they build themselves (a scorecard, a table of runs), so that a notebook cell stays one call.

Each returns its matplotlib Figure; aevb.figures.save_figure writes it. Text is sized to be read
where a code host shows the committed PNG (about 650 to 800 pixels wide): FONT points at
save_figure's 90 dpi."""

import math
import textwrap

from aevb.declared import DATASETS

FONT = 11  # points: titles, axis labels, ticks and legends
SMALL = 10  # points: row labels and annotations, the smallest text drawn


def short_label(text, width=62, lines=3):
    """`text` on at most `lines` lines of about `width` characters, broken between words; a trailing
    parenthesis is dropped where the text needs more lines than that, or where it would take two
    lines and without it takes one; what still does not fit ends in '…' (never a word cut in
    half)."""
    text = " ".join(str(text).split())
    if (
        text.endswith(")")
        and " (" in text
        and len(text) > width
        and (len(text) > width * lines or text.rindex(" (") <= width)
    ):
        text = text[: text.rindex(" (")]
    return textwrap.fill(text, width=width, max_lines=lines, placeholder=" …")


def unique_legend(fig, axes, ncol=3, extra=(), fontsize=FONT, **kw):
    """One legend for the whole figure, under its panels, each label once (the first handle drawn
    with it), in the order the panels drew them, then the `extra` handles (proxies: Line2D with a
    label). Call it after tight_layout. Returns the legend."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                handles.setdefault(label, handle)
    for handle in extra:
        handles.setdefault(handle.get_label(), handle)
    return fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=ncol,
        fontsize=fontsize,
        frameon=False,
        **kw,
    )


def key_legend(fig, colors=None, styles=None, widths=None, ncol=4, fontsize=FONT):
    """A figure legend that explains each visual channel once instead of every line: `colors`
    {label: color} (drawn as solid lines), `styles` {label: linestyle} and `widths` {label:
    (linewidth, alpha)} (drawn in grey). For panels whose lines are every combination of a few of
    each."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=label) for label, c in (colors or {}).items()]
    handles += [
        Line2D([], [], color="0.3", ls=ls, lw=1.5, label=label)
        for label, ls in (styles or {}).items()
    ]
    handles += [
        Line2D([], [], color="0.3", lw=lw, alpha=alpha, label=label)
        for label, (lw, alpha) in (widths or {}).items()
    ]
    return fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=ncol,
        fontsize=fontsize,
        frameon=False,
    )


# ---- the scorecard: every published value against ours, in tolerances ----------------------------

def scorecard_layout(judged):
    """The rows of the scorecard figure, top to bottom: a header per source (paper and its table or
    figure) followed by its rows. [(y, label, kind, row or None)] with kind 'header' or 'row'; a row
    whose label takes more than one line gets more room."""
    layout, y = [], 0.0
    for source, rows in judged.groupby("source", sort=False):
        y += 0.4 if layout else 0.0
        layout.append((y, source, "header", None))
        y += 1.0
        for _, row in rows.iterrows():
            label = short_label(row["what"])
            tall = label.count("\n")
            y += 0.3 * tall
            layout.append((y, label, "row", row))
            y += 1.0 + 0.3 * tall
    return layout


def scorecard_differences(judged, clip=10.0, title=None):
    """How much better ours is than each published value, in units of the row's tolerance (`judged`:
    aevb.scorecard.judged_differences' frame, its `ratio`, `verdict`, `what` and `source`), one row
    per value, grouped under its source; the band is ±1 tolerance. Values beyond ±`clip` tolerances
    are drawn at the axis' edge as arrows, their value written beside them, so that the band keeps
    its width."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from aevb.scorecard import VERDICTS  # each verdict's colour, written there once

    layout = scorecard_layout(judged)
    height = (layout[-1][0] + 1.5) * 0.24 + 1.6 if layout else 3.0
    fig, ax = plt.subplots(figsize=(10, height))
    ratios = judged["ratio"].astype(float)
    limit = max(2.0, min(clip, math.ceil(ratios.abs().max() * 1.1))) if len(ratios) else 2.0
    span = limit * 1.12  # room for the arrows at the edge
    ax.axvspan(-1, 1, color=VERDICTS["reproduced"].background, zorder=0, label="±1 tolerance")
    ax.axvline(0, color="k", lw=0.8, zorder=1)
    ticks, labels, headers = [], [], []
    for y, label, kind, row in layout:
        ticks.append(y)
        labels.append(label)
        if kind == "header":
            headers.append(len(labels) - 1)
            ax.axhline(y, color="0.75", lw=0.6, zorder=0)
            continue
        ratio, color = float(row["ratio"]), VERDICTS[row["verdict"]].color
        if abs(ratio) <= limit:
            ax.plot(ratio, y, "o", color=color, ms=6, zorder=3)
            continue
        edge = math.copysign(limit, ratio)
        ax.plot(edge, y, ">" if ratio > 0 else "<", color=color, ms=8, zorder=3)
        ax.annotate(
            f"{ratio:+.1f}".replace("-", "−"),
            (edge, y),
            xytext=(-8 if ratio > 0 else 8, 0),
            textcoords="offset points",
            ha="right" if ratio > 0 else "left",
            va="center",
            fontsize=SMALL,
            color=color,
            fontweight="bold",
        )
    ax.set_yticks(ticks, labels, fontsize=SMALL)
    for i in headers:
        ax.get_yticklabels()[i].set_fontweight("bold")
        ax.get_yticklabels()[i].set_fontsize(FONT)
    if layout:
        ax.set_ylim(layout[-1][0] + 0.8, -0.8)  # the scorecard's order, top to bottom
    else:
        ax.text(
            0.5,
            0.5,
            "no row has a value of ours in this profile",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set_xlim(-span, span)
    ax.set_xticks(
        sorted(
            {
                0,
                *((-1, 1) if limit <= 4 else ()),
                *(t for t in (-limit, -5, 5, limit) if abs(t) <= limit),
            }
        )
    )
    ax.tick_params(axis="x", labelsize=FONT)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(
        "ours against the published value, in tolerances (> 0: ours is better)", fontsize=FONT
    )
    ax.set_title(
        title or f"Scorecard: {len(judged)} published values against ours", fontsize=FONT + 1
    )
    shown = [v for v in VERDICTS if v in set(judged["verdict"])]
    handles = [Line2D([], [], ls="", marker="o", color=VERDICTS[v].color, label=v) for v in shown]
    band = VERDICTS["reproduced"].background
    handles.append(plt.Rectangle((0, 0), 1, 1, color=band, label="±1 tolerance"))
    if (ratios.abs() > limit).any():
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker=">",
                color="0.3",
                label=f"beyond ±{limit:g}: its value written",
            )
        )
    below = 0.65 / max(
        height - 1.3, 0.5
    )  # the legend under the axis' label: 0.65 inches, in axes heights
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -below),
        ncol=len(handles),
        fontsize=SMALL,
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.2,
    )
    fig.tight_layout()
    return fig


# ---- Burda et al.: test NLL of each model, ± its standard error, beside theirs -------------------


def nll_beside_published(
    table, title="", model="model", ours="test NLL (ours)", se="± se", theirs="test NLL (theirs)"
):
    """One row per model of `table` (a DataFrame: the model's name, our test NLL, its standard error
    and the published NLL, None where none is published): ours as a point with ±1 standard error,
    theirs as a cross on the same row. Lower is better."""
    import matplotlib.pyplot as plt

    rows = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.62 * len(rows) + 1.6))
    y = list(range(len(rows)))
    ax.errorbar(
        rows[ours],
        y,
        xerr=rows[se].fillna(0),
        fmt="o",
        color="tab:blue",
        ms=7,
        capsize=4,
        lw=1.5,
        label="ours, ± 1 standard error",
    )
    published = rows[theirs].notna()
    if published.any():
        ax.plot(
            rows[theirs][published],
            [y[i] for i in rows.index[published]],
            "X",
            color="k",
            ms=9,
            label="Burda et al., Table 1",
        )
    ax.set_yticks(y, [short_label(m, width=34) for m in rows[model]], fontsize=SMALL)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("test NLL, negative log-likelihood in nats (lower is better)", fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.55 / (0.62 * len(rows) + 0.3)),
        ncol=2,
        fontsize=FONT,
        frameon=False,
    )
    fig.tight_layout()
    return fig


# ---- curves of a bound against training samples, with a published value --------------------------


def bound_curves(
    curves, hue_order=None, published=None, title="", ylabel="test lower bound (nats)", below=40.0
):
    """`curves` (a DataFrame: `samples`, `bound` and `change`, one line per change) against training
    samples on a log axis, with `published` = (samples, value, label) as a black point. The y axis
    spans `below` nats under the lowest curve's best value up to the best one; the x axis starts
    where a curve enters that span, so the early steep fall does not take most of the axis."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    sns.lineplot(
        curves, x="samples", y="bound", hue="change", hue_order=hue_order, ax=ax, marker="o", ms=4
    )
    best = curves.groupby("change")["bound"].max()
    top = max(best.max(), published[1] if published else -math.inf)
    low = best.min() - below
    if published:
        ax.plot(published[0], published[1], "ko", ms=8, label=published[2])
    shown = curves[curves.bound >= low].samples
    first = min(shown.min(), published[0] if published else math.inf)
    last = max(curves.samples.max(), published[0] if published else 0)
    ax.set(xscale="log", xlim=(first / 1.5, last * 1.5), ylim=(low, top + 0.1 * (top - low)))
    ax.set_xlabel("training samples evaluated", fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=FONT, title=None)
    fig.tight_layout()
    return fig


# ---- a table of our means over seeds beside published values -------------------------------------


def table_of_means(table, seeds, published, title="", note=""):
    """A table drawn as a figure: a row per metric (`table`'s index), a column per name of `seeds`
    ({name: number of seeds}) with its '<name> (ours, mean of n)' and '<name> (ours, sd)' columns
    written as aevb.findings.plus_minus writes them (no ± for one seed, never 'nan'), its header
    saying how many seeds, then the `published` columns as they are, to two decimals; `note` in
    italics below."""
    import matplotlib.pyplot as plt
    from aevb.findings import count, plus_minus

    fig, ax = plt.subplots(figsize=(11, 1.6))
    ax.axis("off")
    mean = {
        name: next(c for c in table.columns if c.startswith(f"{name} (ours, mean"))
        for name in seeds
    }
    headers = [f"{name}\n(ours, {count(n, 'seed')})" for name, n in seeds.items()]
    headers += [
        c.replace(" (", "\n(", 1) for c in published
    ]  # two-line headers keep the table narrow
    cells = [
        [
            plus_minus(table.loc[m, mean[name]], table.loc[m, f"{name} (ours, sd)"], n, unit=None)
            for name, n in seeds.items()
        ]
        + [f"{table.loc[m, c]:.2f}" for c in published]
        for m in table.index
    ]
    drawn = ax.table(
        cellText=cells,
        rowLabels=list(table.index),
        colLabels=headers,
        loc="center",
        cellLoc="center",
    )
    drawn.auto_set_font_size(False)  # else matplotlib shrinks the text to fit its cells
    drawn.set_fontsize(SMALL)
    drawn.scale(1, 1.7)
    for (r, _), cell in drawn.get_celld().items():
        if r == 0:
            cell.set_height(cell.get_height() * 1.6)  # room for the two-line headers
    ax.set_title(title, pad=24, fontsize=FONT + 1)
    if note:
        fig.text(0.5, -0.08, note, ha="center", fontsize=SMALL, style="italic")
    return fig


# ---- the central answer: AEVB minus wake-sleep per Nz and protocol ------------------------------


def aevb_minus_ws(table, labels=None, title="AEVB minus wake-sleep: test lower bound"):
    """One panel per dataset of `table` (aevb.scorecard.aevb_minus_ws's: protocol, dataset, Nz, n,
    gap, gap_sd): the mean gap per Nz, a line per protocol, bars of ±1 sd over the seed pairs where
    there are several, each point labelled with its n; zero drawn (above it AEVB's bound is higher).
    Rows of protocol 'published' (aevb.scorecard.published_gaps: a paper's own values, n = 0) are
    grey crosses on a dashed line. `labels`: {protocol: legend text}. Nz on a log axis."""
    import matplotlib.pyplot as plt

    present = list(dict.fromkeys(table["dataset"]))  # in aevb/declared.py's order: MNIST first
    datasets = [d for d in DATASETS if d in present] + [d for d in present if d not in DATASETS]
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5.2 * max(len(datasets), 1), 5.2),
                             squeeze=False)
    markers = "osD^v"
    for ax, dataset in zip(axes[0], datasets):
        rows = table[table["dataset"] == dataset]
        for i, (protocol, group) in enumerate(rows.groupby("protocol", sort=False)):
            group = group.sort_values("Nz")
            # a published reading (n = 0: no seeds) is drawn apart: grey crosses, dashed
            style = (dict(marker="x", ms=8, lw=1, ls="--", color="0.4") if protocol == "published"
                     else dict(marker=markers[i % 5], ms=7, capsize=4, lw=1.5))
            ax.errorbar(group["Nz"], group["gap"], yerr=group["gap_sd"].fillna(0), **style,
                        label=(labels or {}).get(protocol, protocol))
            for nz, gap, n in zip(group["Nz"], group["gap"], group["n"]):
                if n:
                    ax.annotate(f"n={n}", (nz, gap), textcoords="offset points", xytext=(6, 4),
                                fontsize=SMALL - 1, color="0.35")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ticks = sorted(set(rows["Nz"]))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
        ax.set_xlabel("Nz, latent dimensions", fontsize=FONT)
        ax.set_ylabel("AEVB minus wake-sleep, nats", fontsize=FONT)
        ax.set_title(DATASETS[dataset].title if dataset in DATASETS else dataset,
                     fontsize=FONT + 1)
    # one legend below the panels for every series of any panel (it would hide a panel's points)
    entries = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    rows = math.ceil(len(entries) / 2)
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="lower center", ncol=2, fontsize=FONT,
                   frameon=False)
    note = "(above zero AEVB's bound is higher)"
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0.055 * rows, 1, 1))
    return fig


def lower_bound_panels(runs, published, panels, colors, labels, title=""):
    """Kingma & Welling's Figure 2 as they drew it: a row per dataset, a panel per Nz, each
    algorithm's train (solid) and test (dashed) lower bound against training samples evaluated
    (log axis), their published values as markers (filled: train, open: test); the spare panel
    holds the legend. `runs`: {(dataset, algorithm, Nz): a run with a 'history' of rows with
    samples, train_elbo and test_elbo}; `published`: {(dataset, Nz, algorithm): {samples: (test,
    train)}}; `panels`: {dataset: [Nz, ...]}; `colors`, `labels`: {algorithm: ...}, whose order is
    the legend's. The y axis shows the range that tells the algorithms apart: the published values
    and the second half of each curve (early bounds are far below the rest)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = list(panels)
    # the last row has a spare panel at its end for the legend
    n_cols = max([len(panels[d]) for d in rows[:-1]] + [len(panels[rows[-1]]) + 1])
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3.4 * n_cols, 3.5 * len(rows)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, dataset in enumerate(rows):
        for j, nz in enumerate(panels[dataset]):
            ax, values = axes[i, j], []
            ax.axis("on")
            for algorithm in colors:
                if (dataset, algorithm, nz) not in runs:
                    continue
                history = runs[dataset, algorithm, nz]["history"]
                samples = [row["samples"] for row in history]
                for split, style in (("train", "-"), ("test", "--")):
                    elbo = [row[f"{split}_elbo"] for row in history]
                    ax.plot(samples, elbo, style, color=colors[algorithm])
                    values += elbo[-len(elbo) // 2:]
                for n, (test, train) in published.get((dataset, nz, algorithm), {}).items():
                    ax.plot(n, train, "o", color=colors[algorithm], ms=7)
                    ax.plot(n, test, "o", mfc="white", mec=colors[algorithm], mew=1.5, ms=7)
                    values += [test, train]
            if values:
                lo, hi = min(values), max(values)
                pad = 0.1 * (hi - lo) + 1
                ax.set_ylim(lo - 2 * pad, hi + pad)
            ax.set_xscale("log")
            ax.set_xlim(right=3e8)  # Kingma & Welling's axis ends near 2.5 x 10^8
            name = DATASETS[dataset].title if dataset in DATASETS else dataset
            ax.set_title(f"{name}, Nz = {nz}", fontsize=FONT)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("lower bound (nats)", fontsize=FONT)
            if i == len(rows) - 1:
                ax.set_xlabel("training samples evaluated", fontsize=FONT)
    handles = [Line2D([], [], color=colors[a], lw=2, label=f"{labels[a]} (ours)")
               for a in colors] + [
        Line2D([], [], color="k", ls="-", label="train"),
        Line2D([], [], color="k", ls="--", label="test"),
        Line2D([], [], color="gray", marker="o", ls="", label="Kingma & Welling, train"),
        Line2D([], [], color="gray", marker="o", mfc="white", mew=1.5, ls="",
               label="Kingma & Welling, test")]
    axes[-1, -1].legend(handles=handles, loc="center", fontsize=FONT, frameon=False)
    fig.suptitle(title, fontsize=FONT)
    fig.tight_layout()
    return fig
