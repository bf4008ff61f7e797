"""Figure and table files, named after the papers' figures, and the image grids they show.

FIGURES and CSV_TABLES are the one list of what `make paper` draws: the index page, RESULTS.md and
the tests read them.
"""
from pathlib import Path
from typing import NamedTuple

from aevb.declared import DATASETS
from aevb.files import atomic_write, atomic_write_text


class Figure(NamedTuple):
    """One figure of the papers (or beyond them), as FIGURES declares it."""
    caption: str
    notebook: str  # the notebook that draws it (notebooks/<notebook>.ipynb)
    paper: str = ""  # a key of PAPERS; "" beyond the papers
    judges: tuple = ()  # the scorecard's sources (its `source` column) judged beside it


# The papers reproduced, as the scorecard's sources name them, with the title the index page gives
# each.
PAPERS = {
    "Andriciuc (2025)": "The replication report (Andriciuc, 2025)",
    "Kingma & Welling (2013)": "Kingma & Welling (2013), Auto-Encoding Variational Bayes",
    "Burda, Grosse & Salakhutdinov (2015)":
        "Burda, Grosse & Salakhutdinov (2015), the VAE and IWAE",
}


# Every figure `make paper` produces, declared once: file stem -> its caption, the notebook that
# makes it, the paper whose figure it reproduces ("" beyond the papers) and the scorecard's sources
# whose verdicts the index page sets beside it. The index page, RESULTS.md, make's targets and the
# tests read it; a paper's figures are shown in this order.
FIGURES = {
    "report_fig1_aevb_samples": Figure(
        "Replication report, Figure 1 (its random samples): AEVB's decoder means for 100 "
        "random z ~ N(0, I) (Nz = 20)",
        "replication_report",
        paper="Andriciuc (2025)",
        judges=("Andriciuc (2025), claim 3",)),
    "report_fig2_wake_sleep_samples": Figure(
        "Replication report, Figure 2 (its random samples): wake-sleep's decoder means for "
        "the same 100 z ~ N(0, I) (Nz = 20), here the true algorithm",
        "replication_report",
        paper="Andriciuc (2025)"),
    "report_table1": Figure(
        "Replication report, Table 1: test loss, BCE and KL of wake-sleep and AEVB (Nz = 20) "
        "beside the published values",
        "replication_report",
        paper="Andriciuc (2025)",
        judges=("Andriciuc (2025), Table 1", "Andriciuc (2025), claim 2")),
    "report_fig3_performance_vs_latent_dim": Figure(
        "Replication report, Figure 3: final loss (-ELBO) against latent dimension",
        "replication_report",
        paper="Andriciuc (2025)",
        judges=("Andriciuc (2025), latent sweep",)),
    "report_fig4_training_loss": Figure(
        "Replication report, Figure 4: training loss of AEVB and wake-sleep (Nz = 20) per "
        "epoch",
        "replication_report",
        paper="Andriciuc (2025)"),
    "report_fig5_samples_by_latent_dim": Figure(
        "Replication report, Figure 5 (its random samples): AEVB's decoder means for 64 "
        "random z ~ N(0, I) at each latent dimension",
        "replication_report",
        paper="Andriciuc (2025)"),
    "kingma_fig2_lower_bound": Figure(
        "Kingma & Welling, Figure 2: lower bound against training samples evaluated, AEVB vs "
        "wake-sleep (train solid, test dashed)",
        "kingma2013",
        paper="Kingma & Welling (2013)",
        judges=("Kingma & Welling (2013), Figure 2", "Andriciuc (2025), claim 1")),
    "kingma_fig3_marginal_likelihood": Figure(
        "Kingma & Welling, Figure 3: estimated marginal log-likelihood of AEVB, wake-sleep "
        "and Monte Carlo EM (Nz = 3, N_train 1000 and 50000); batch MCEM's test curve also "
        "with each iteration counted as one sample per M-step and point (thin)",
        "marginal_likelihood",
        paper="Kingma & Welling (2013)",
        judges=("Kingma & Welling (2013), Figure 3",)),
    "kingma_fig3_estimators": Figure(
        "Kingma & Welling, Figure 3's models by both estimators: App. D's (the paper's) and "
        "importance sampling",
        "marginal_likelihood",
        paper="Kingma & Welling (2013)"),
    "kingma_fig4_manifold_mnist": Figure(
        "Kingma & Welling, Figure 4(b): learned MNIST manifold, Nz = 2",
        "kingma2013",
        paper="Kingma & Welling (2013)"),
    "kingma_fig4_manifold_frey": Figure(
        "Kingma & Welling, Figure 4(a): learned Frey Face manifold, Nz = 2",
        "kingma2013",
        paper="Kingma & Welling (2013)"),
    "kingma_fig5_samples": Figure(
        "Kingma & Welling, Figure 5: random MNIST samples for Nz = 2, 5, 10, 20",
        "kingma2013",
        paper="Kingma & Welling (2013)"),
    "burda_vae_iwae": Figure(
        "Burda et al., Table 1 (one stochastic layer): the test NLL of each VAE (k = 1) and "
        "IWAE (k = 50) run, by importance sampling with ±1 standard error, beside their "
        "published NLL (×); each row names its binarization, the title the passes trained",
        "burda2015",
        paper="Burda, Grosse & Salakhutdinov (2015)",
        judges=("Burda, Grosse & Salakhutdinov (2015), Table 1",)),
    "latent_scatter_mnist": Figure(
        "Beyond the papers: MNIST test codes (Nz = 2, posterior means) coloured by digit",
        "kingma2013"),
    "reconstructions_mnist": Figure(
        "Beyond the papers: MNIST test digits and their AEVB and wake-sleep reconstructions "
        "(Nz = 20)",
        "kingma2013"),
    "aevb_minus_wake_sleep": Figure(
        "The answer: AEVB's final test lower bound minus the true wake-sleep's, seed by seed, per "
        "Nz and protocol (Kingma & Welling's as released and by the paper's text alone, the "
        "report's), the mean over the seed pairs with ±1 sd where there are several and n beside "
        "each point; Kingma & Welling's own gap from their Figure 2 at the nearest sample count "
        "they publish (grey crosses), and ours at 10^8 samples where paper-scale runs are "
        "published; above zero AEVB's bound is higher",
        "scorecard"),
    "scorecard_differences": Figure(
        "Scorecard: how much better our value is than the published one (positive: ours is "
        "better, for bounds and losses alike), in units of each row's tolerance, for every "
        "value run at its published scale, grouped by paper; a value beyond the axis is an "
        "arrow at its edge with its value written",
        "scorecard"),
    "interpolation_mnist": Figure(
        "Beyond the papers: decoded linear interpolations between test codes (Nz = 20)",
        "kingma2013"),
    "wake_sleep_gap": Figure(
        "Beyond the papers: wake-sleep's test bound at Nz = 20 against training samples under"
        " Kingma & Welling's protocol, and under each one-change variant where the profile "
        "runs them",
        "wake_sleep_gap"),
}
TABLES = {"report_table1"}  # written as CSV (and a PNG/PDF rendering of the table)
# CSV tables without a picture: file stem -> (what it holds, notebook that makes it). The index page
# shows them.
CSV_TABLES = {
    "scorecard": (
        "Every number and claim the papers publish beside ours, with the protocol, budget, "
        "tolerance and a verdict",
        "scorecard"),
    "test_log_likelihood": (
        "Test log-likelihoods of the main MNIST runs by importance sampling, beside their lower "
        "bounds",
        "scorecard"),
    "wake_sleep_gap": (
        "What moves wake-sleep's bound under Kingma & Welling's protocol (Nz = 20, 3x10^6 "
        "samples): each change, the step size chosen, the bounds",
        "wake_sleep_gap"),
    "wake_sleep_split": (
        "AEVB minus wake-sleep at Nz = 20, seed by seed: the bound, and log p(x) by its own "
        "encoder, a refitted encoder and App. D's estimator",
        "wake_sleep_gap"),
    "burda_table1": (
        "Burda et al.'s one-layer rows: our VAE and IWAE test NLL (importance sampling, k = 5000) "
        "beside theirs, with the passes trained",
        "burda2015"),
    "kingma_fig3_chain_start": (
        "Figure 3's models (N_train = 1000) by App. D's estimator with its chains started from the "
        "prior and kept (the released code's start) and from q(z|x)",
        "marginal_likelihood"),
    "wake_sleep_released_recognition": (
        "Wake-sleep's recognition model as released against the paper's text, each at the rule's "
        "step and at 0.02 (MNIST, Nz = 200, every seed) and on Frey Face: peak and final test "
        "bounds, test KL",
        "kingma2013"),
}
IMAGE_SHAPE = {name: d.image_shape for name, d in DATASETS.items()}  # (rows, columns)


def notebooks():
    """The figure notebooks, in the order FIGURES and CSV_TABLES first name them."""
    return list(dict.fromkeys(f[1] for f in [*FIGURES.values(), *CSV_TABLES.values()]))


def outputs(notebook):
    """The files a figure notebook writes below the figures folder (make declares them as its
    targets): PNG and PDF of each figure, the CSV of each table, and its findings
    (aevb.findings)."""
    files = [
        f"{name}.{ext}" for name, figure in FIGURES.items() if figure.notebook == notebook
        for ext in ("png", "pdf")
    ]
    files += [
        f"{name}.csv"
        for name, (_, nb) in [*CSV_TABLES.items(), *((t, FIGURES[t][:2]) for t in TABLES)]
        if nb == notebook
    ]
    return files + [f"findings/{notebook}.json"]


def empty_panels(fig):
    """The visible axes of `fig` that show nothing: no line with a finite point, no image, no
    collection with points, no bar, no text (a panel may say why it has nothing to show); an axes
    turned off (a legend panel) is not counted."""
    import numpy as np
    empty = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        lines = any(np.isfinite(np.asarray(line.get_xydata(), dtype=float)).all(axis=1).any()
                    for line in ax.get_lines() if len(line.get_xydata()))
        collections = any(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets"))
        # a text: a message
        if not (lines or ax.images or collections or ax.patches or ax.tables or ax.texts):
            empty.append(ax.get_title() or f"axes {fig.axes.index(ax)}")
    return empty


def setup_matplotlib():
    """One look for every notebook: moderate resolution keeps the rendered HTML small."""
    import matplotlib.pyplot as plt
    plt.rcParams["figure.dpi"] = 80


def save_figure(fig, name, figures_dir="figures", dpi=90):
    """Write figures_dir/name.png and .pdf, each atomically (a later run never sees half a file)."""
    if name not in FIGURES:
        raise KeyError(f"{name} is not in aevb.figures.FIGURES; add it there with its caption")
    empty = empty_panels(fig)
    if empty:
        raise ValueError(f"figure {name}: {len(empty)} panel(s) show no data ({'; '.join(empty)}): "
                         "its runs lack the values it plots")
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        atomic_write(figures_dir / f"{name}.{ext}",
                     lambda f: fig.savefig(f, format=ext, dpi=dpi, bbox_inches="tight"))
    return figures_dir / f"{name}.png"


def save_csv(frame, name, figures_dir="figures"):
    """Write the DataFrame `frame` to figures_dir/name.csv atomically (no index column)."""
    if name not in CSV_TABLES and name not in TABLES:
        raise KeyError(f"{name} is not in aevb.figures.CSV_TABLES; add it there with its caption")
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(figures_dir / f"{name}.csv", frame.to_csv(index=False))


def image_grid(images, image_shape, nrow, pad=1):
    """A [H, W] numpy array tiling `images` ([N, D] in [0, 1]) with torchvision's make_grid."""
    from torchvision.utils import make_grid
    images = images.detach().cpu().reshape(-1, 1, *image_shape)
    return make_grid(images, nrow=nrow, padding=pad, pad_value=1.0)[0].numpy()


def image_panel(ax, images, image_shape, nrow, title=None):
    """`images` tiled on the axes `ax`, grey levels 0 (black) to 1 (white), without ticks."""
    ax.imshow(image_grid(images, image_shape, nrow=nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)


def main(argv=None):
    """For make: `python -m aevb.figures outputs NOTEBOOK` prints the files it writes; `... check
    NOTEBOOK FIGURES_DIR` fails, naming them, when any of them is missing after the notebook ran."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(description="The figure notebooks' outputs, for make")
    parser.add_argument("command", choices=["outputs", "check"])
    parser.add_argument("notebook", choices=notebooks())
    parser.add_argument("figures_dir", nargs="?")
    args = parser.parse_args(argv)
    if args.command == "outputs":
        print(" ".join(outputs(args.notebook)))
        return
    missing = [
        name for name in outputs(args.notebook) if not (Path(args.figures_dir) / name).exists()
    ]
    if missing:
        sys.exit(
            f"notebooks/{args.notebook}.ipynb ran but did not write {', '.join(missing)} in "
            f"{args.figures_dir}"
        )


if __name__ == "__main__":
    main()
