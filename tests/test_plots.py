"""aevb.plots on constructed data: each figure has data in every panel, text large enough to read where a
code host shows it, legends whose entries are unique, and axes that show what their caption says."""
import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aevb import plots  # noqa: E402
from aevb.figures import empty_panels  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def legend_labels(fig):
    return [t.get_text() for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if legend
            for t in legend.get_texts()]


def texts(fig):
    """Every visible text of the figure once drawn: tick labels, titles, axis labels, legends, annotations."""
    fig.canvas.draw()
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


# ---- short_label -----------------------------------------------------------------------------------------

def test_short_label_never_cuts_a_word_and_keeps_a_short_text_whole():
    assert plots.short_label("AEVB, Nz = 20: test loss (-ELBO)") == "AEVB, Nz = 20: test loss (-ELBO)"
    long = "'Wake-Sleep' column, Nz = 20: test loss (-ELBO); against the true wake-sleep algorithm"
    label = plots.short_label(long, width=50)
    assert label.count("\n") == 1 and label.replace("\n", " ") == long  # two lines, every word whole
    many = " ".join(f"word{i}" for i in range(60))
    cut = plots.short_label(many, width=40, lines=2)
    assert cut.endswith("…") and cut.count("\n") == 1
    assert all(w in many.split() for w in cut.replace("\n", " ").removesuffix(" …").split())


def test_short_label_drops_a_trailing_parenthesis_only_where_it_saves_a_line():
    text = "MNIST, AEVB, Nz = 3: a long enough description (theirs on 1000 points)"
    assert plots.short_label(text, width=50) == "MNIST, AEVB, Nz = 3: a long enough description"
    assert plots.short_label("short (kept)", width=50) == "short (kept)"


# ---- the scorecard figure ----------------------------------------------------------------------------------

def judged(ratios):
    """A judged_differences-like frame: two sources, the verdict from the ratio."""
    return pd.DataFrame([{"source": "Paper A (2013), Figure 2" if i < len(ratios) // 2 else "Paper B (2025), Table 1",
                          "what": f"MNIST, AEVB, Nz = {i}: test lower bound at 3e6 samples, a description long "
                                  f"enough to need a second line",
                          "ratio": r, "verdict": "reproduced" if abs(r) <= 1 else "not reproduced"}
                         for i, r in enumerate(ratios)])


def test_scorecard_clips_outliers_so_the_tolerance_band_keeps_its_width_and_writes_their_values():
    fig = plots.scorecard_differences(judged([0.3, -0.8, 1.7, -47.2, 8.9, -15.3]), clip=10)
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert low < -1 and high > 1  # the band is on the axis
    assert high - low <= 2 * 10 * 1.2  # and at least a tenth of it: not squeezed by the -47
    written = [t.get_text() for t in ax.texts]
    assert written == ["−47.2", "−15.3"]  # the clipped values, each written beside its arrow
    assert not empty_panels(fig)


def test_scorecard_groups_rows_under_their_source_with_whole_labels_at_a_readable_size():
    frame = judged([0.3, -0.8, 1.7, -2.0])
    fig = plots.scorecard_differences(frame)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "Paper A (2013), Figure 2" and "Paper B (2025), Table 1" in labels
    assert len(labels) == len(frame) + 2  # a header per source, then its rows
    for label, what in zip([lab for lab in labels if not lab.startswith("Paper")], frame.what):
        assert label.replace("\n", " ") == what  # wrapped between words, never cut
    assert min(t.get_fontsize() for t in texts(fig)) >= 9


def test_scorecard_legend_entries_are_unique_and_name_only_verdicts_drawn():
    fig = plots.scorecard_differences(judged([0.3, -1.8]))
    labels = legend_labels(fig)
    assert len(labels) == len(set(labels))
    assert "reproduced" in labels and "not reproduced" in labels and not any("beyond" in label for label in labels)


def test_scorecard_without_rows_says_so():
    fig = plots.scorecard_differences(judged([]).reindex(columns=["source", "what", "ratio", "verdict"]))
    assert any("no row" in t.get_text() for t in fig.axes[0].texts)


# ---- Burda et al.'s NLL ------------------------------------------------------------------------------------

BURDA = pd.DataFrame([
    {"model": "IWAE (k = 50), dynamic", "test NLL (ours)": 101.3, "± se": 0.9, "test NLL (theirs)": 84.78},
    {"model": "VAE (k = 1), dynamic", "test NLL (ours)": 102.8, "± se": 0.8, "test NLL (theirs)": 86.76},
    {"model": "VAE (k = 1), dynamic, output bias from 0", "test NLL (ours)": 107.0, "± se": 1.0,
     "test NLL (theirs)": None}])


def test_burda_draws_each_models_nll_with_its_standard_error_beside_theirs():
    fig = plots.nll_beside_published(BURDA, title="test NLL")
    ax = fig.axes[0]
    assert not empty_panels(fig)
    labels = legend_labels(fig)
    assert len(labels) == len(set(labels)) == 2 and any("Burda" in label for label in labels)
    assert [t.get_text().replace("\n", " ") for t in ax.get_yticklabels()] == list(BURDA.model)
    low, high = ax.get_xlim()
    assert low <= 84.78 and high >= 107.0 + 1.0  # theirs and ours with its error bar
    (bars,) = [c for c in ax.containers if hasattr(c, "has_xerr") and c.has_xerr]
    segments = bars.lines[2][0].get_segments()
    assert [round(s[1][0] - s[0][0], 6) for s in segments] == [1.8, 1.6, 2.0]  # ± 1 standard error
    assert "NLL" in ax.get_xlabel() and "lower is better" in ax.get_xlabel()


# ---- curves of a bound against samples ------------------------------------------------------------------------

def test_bound_curves_spend_the_axis_on_the_curves_not_on_the_early_fall():
    samples = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6]
    curves = pd.DataFrame({"samples": samples, "bound": [-540, -400, -250, -150, -125, -114], "change": "none"})
    fig = plots.bound_curves(curves, published=(3e6, -115.8, "theirs"), title="one curve", below=40)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low == pytest.approx(-154) and high > -114
    left, right = ax.get_xlim()
    assert left > 1e5 and right >= 3e6  # starts where the curve enters the y range, not at 10^4
    labels = legend_labels(fig)
    assert labels == ["none", "theirs"]
    assert not empty_panels(fig)


# ---- a table of means over seeds ---------------------------------------------------------------------------------

def test_table_of_means_writes_one_seed_without_nan_and_the_seed_count_in_its_header():
    table = pd.DataFrame({"AEVB (ours, mean of 1)": {"loss": 100.991}, "AEVB (ours, sd)": {"loss": math.nan},
                          "WS (ours, mean of 3)": {"loss": 108.82}, "WS (ours, sd)": {"loss": 0.5},
                          "AEVB (report)": {"loss": 101.11}})
    fig = plots.table_of_means(table, {"AEVB": 1, "WS": 3}, ["AEVB (report)"], title="Test set")
    shown = [cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()]
    assert "100.99" in shown and "108.82 ± 0.50" in shown and "101.11" in shown
    assert "AEVB\n(ours, 1 seed)" in shown and "WS\n(ours, 3 seeds)" in shown
    assert not any("nan" in text.lower() or "1 seeds" in text for text in shown)


# ---- one legend for several panels ---------------------------------------------------------------------------

def test_unique_legend_names_each_label_once_and_key_legend_explains_each_channel_once():
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.plot([1, 2], [1, 2], label="AEVB, train")
        ax.plot([1, 2], [2, 1], label="AEVB, test")
    plots.unique_legend(fig, axes, extra=[matplotlib.lines.Line2D([], [], marker="o", label="theirs")])
    assert legend_labels(fig) == ["AEVB, train", "AEVB, test", "theirs"]
    fig2 = plt.figure()
    legend = plots.key_legend(fig2, colors={"AEVB": "C0"}, styles={"train": "-", "test": "--"},
                              widths={"App. D": (1.5, 1.0)})
    assert [t.get_text() for t in legend.get_texts()] == ["AEVB", "train", "test", "App. D"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    assert math.isclose(legend.get_texts()[0].get_fontsize(), plots.FONT)


# ---- aevb_minus_ws: the answer -----------------------------------------------------------------------------

def test_the_answer_draws_each_protocols_gaps_with_their_sd_and_n_per_dataset():
    table = pd.DataFrame([
        dict(protocol="kingma", dataset="frey", Nz=10, n=1, gap=-2.0, gap_sd=math.nan),  # Frey first: drawn second
        dict(protocol="kingma", dataset="mnist", Nz=3, n=3, gap=4.5, gap_sd=0.5),
        dict(protocol="kingma", dataset="mnist", Nz=20, n=3, gap=5.1, gap_sd=0.2),
        dict(protocol="report", dataset="mnist", Nz=20, n=1, gap=8.0, gap_sd=math.nan)])
    fig = plots.aevb_minus_ws(table, {"kingma": "as released", "report": "the report's"})
    assert len(fig.axes) == 2 and not empty_panels(fig)
    mnist, frey = fig.axes
    assert mnist.get_title() == "MNIST" and frey.get_title() == "Frey Face" and mnist.get_xscale() == "log"
    points = sorted((tuple(x), tuple(y)) for line in mnist.lines if len(x := line.get_xdata()) and len(
        y := line.get_ydata()) and line.get_marker() not in (None, "None", ""))
    assert ((3, 20), (4.5, 5.1)) in points and ((20,), (8.0,)) in points
    # the error bars are the seeds' sd: kingma's at Nz = 20 spans 5.1 ± 0.2
    spans = [seg for coll in mnist.collections for seg in coll.get_segments()]
    assert any(math.isclose(s[0][1], 4.9) and math.isclose(s[1][1], 5.3) for s in spans)
    words = [t.get_text() for t in texts(fig)]
    assert "n=3" in words and "n=1" in words and {"as released", "the report's"} <= set(legend_labels(fig))
    assert all(t.get_fontsize() >= plots.SMALL - 1 for t in texts(fig))


def test_the_answer_draws_a_papers_own_gap_apart_without_seed_counts():
    table = pd.DataFrame([
        dict(protocol="kingma", dataset="mnist", Nz=3, n=1, gap=4.0, gap_sd=math.nan),
        dict(protocol="kingma", dataset="mnist", Nz=20, n=1, gap=9.0, gap_sd=math.nan),
        dict(protocol="published", dataset="mnist", Nz=3, n=0, gap=5.2, gap_sd=math.nan),
        dict(protocol="published", dataset="mnist", Nz=20, n=0, gap=3.3, gap_sd=math.nan)])
    fig = plots.aevb_minus_ws(table, {"kingma": "as released", "published": "their Figure 2"})
    [ax] = fig.axes
    [theirs] = [line for line in ax.lines if line.get_marker() == "x"]
    assert list(theirs.get_ydata()) == [5.2, 3.3] and theirs.get_linestyle() == "--"
    assert [t.get_text() for t in texts(fig)].count("n=1") == 2 and "n=0" not in [t.get_text() for t in texts(fig)]
    assert {"as released", "their Figure 2"} <= set(legend_labels(fig))


# ---- lower_bound_panels: Kingma & Welling's Figure 2 ---------------------------------------------------------

def test_figure_2_draws_a_panel_per_dataset_and_nz_with_both_algorithms_theirs_as_markers_and_a_legend_panel():
    def run(end):
        return {"history": [{"samples": n, "train_elbo": end - 50 / n ** 0.3, "test_elbo": end - 1 - 50 / n ** 0.3}
                            for n in (10 ** 4, 10 ** 5, 10 ** 6, 3 * 10 ** 6)]}
    runs = {("mnist", "aevb", 3): run(-130), ("mnist", "wake_sleep", 3): run(-135), ("mnist", "aevb", 20): run(-100),
            ("mnist", "wake_sleep", 20): run(-106), ("frey", "aevb", 2): run(1200), ("frey", "wake_sleep", 2): run(900)}
    published = {("mnist", 20, "aevb"): {3 * 10 ** 6: (-101.0, -100.5)}}
    fig = plots.lower_bound_panels(runs, published, {"mnist": [3, 20], "frey": [2]},
                                   {"aevb": "tab:blue", "wake_sleep": "tab:orange"},
                                   {"aevb": "AEVB", "wake_sleep": "wake-sleep"}, title="Figure 2")
    drawn = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in drawn] == ["MNIST, Nz = 3", "MNIST, Nz = 20", "Frey Face, Nz = 2"]
    assert not empty_panels(fig)
    mnist20 = drawn[1]
    assert len([line for line in mnist20.lines if line.get_linestyle() in ("-", "--")]) == 4  # 2 algorithms x 2 splits
    markers = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in mnist20.lines if line.get_marker() == "o"]
    assert ((3 * 10 ** 6,), (-100.5,)) in markers and ((3 * 10 ** 6,), (-101.0,)) in markers  # train, test
    lo, hi = mnist20.get_ylim()
    assert lo < -106 and hi > -100 and lo > -160  # the range that tells the two apart, not the early fall
    assert {"AEVB (ours)", "wake-sleep (ours)", "Kingma & Welling, test"} <= set(legend_labels(fig))
    assert all(t.get_fontsize() >= plots.SMALL for t in texts(fig))
