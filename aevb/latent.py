"""Views of a trained model's latent space, each a function of any trained model: a vae_core.VAE, or
a run as aevb.catalog.load (or aevb.runs.load_run) returns it.

    manifold          Kingma & Welling's Figure 4: decoder means on a grid of z = Φ⁻¹(u), u on
                      the unit square
    latent_scatter    posterior means of data points, coloured by label (Nz > 2: their first two
                      principal axes)
    reconstructions   data points and the decoder's mean at their posterior mean, for several
                      models side by side
    interpolations    decoder means along the straight line between two points' posterior means
    prior_samples     decoder means at z ~ N(0, I) (Figure 5), for one model or several side by side

and, as numbers, how a recognition model sees data and the model's own dreams (recognition_stats).

Each figure function returns a matplotlib Figure (draw it with plt.show(), save it with
aevb.figures.save_figure); the arrays behind it come from the functions without a figure
(manifold_means, latent_means, reconstruct, interpolation_path, prior_means).
"""
import math

import torch

from aevb import figures


def model_of(model):
    """The VAE of a model or of a run (a dict with 'model'); refuses anything else."""
    if isinstance(model, dict):
        if "model" not in model:
            raise ValueError(
                "this run has no model: load it with catalog.load(name, profile) (model=True)")
        return model["model"]
    if not hasattr(model, "mean_x"):
        raise TypeError(
            f"expected a trained vae_core.VAE or a loaded run, got {type(model).__name__}")
    return model


def with_encoder(model):
    """The VAE of a model or run whose recognition model was trained (MCEM trains none)."""
    if isinstance(model, dict) and model.get("config", {}).get("algorithm") == "mcem":
        raise ValueError(
            f"{model.get('name', 'this run')} is Monte Carlo EM: it trains no recognition model, "
            "so it "
            "has no posterior means to show (its decoder has: manifold, prior_samples)")
    return model_of(model)


def image_shape(model):
    """(rows, columns) of the model's images: MNIST's 28 x 28, Frey Face's 28 x 20, else square when
    the dimension is a square, else one row."""
    x_dim = model_of(model).x_dim
    for shape in figures.IMAGE_SHAPE.values():
        if shape[0] * shape[1] == x_dim:
            return shape
    side = math.isqrt(x_dim)
    return (side, side) if side * side == x_dim else (1, x_dim)


def _device(model):
    return next(model.parameters()).device


def _axes(ax, figsize):
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


# ---- the arrays ----------------------------------------------------------------------------------

def manifold_grid(n, z_dim=2, dims=(0, 1)):
    """[n * n, z_dim]: z = Φ⁻¹(u) with u at the centres of an n x n grid of equal cells of the unit
    square (Kingma & Welling's Figure 4), in dimensions `dims`, the others 0; row i of the grid is
    u1's i-th value, column j u2's j-th."""
    if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= d < z_dim for d in dims):
        raise ValueError(
            f"dims={dims!r}: expected two different latent dimensions below Nz = {z_dim}")
    u = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    z = torch.zeros(n * n, z_dim)
    z[:, list(dims)] = torch.distributions.Normal(0.0, 1.0).icdf(torch.cartesian_prod(u, u))
    return z


@torch.no_grad()
def manifold_means(model, n=20, dims=(0, 1)):
    """The decoder's means on manifold_grid(n): [n * n, D], row by row."""
    model = model_of(model)
    return model.mean_x(manifold_grid(n, model.z_dim, dims).to(_device(model))).cpu()


@torch.no_grad()
def latent_means(model, x, batch_size=10_000):
    """The posterior means z_loc of the points x: [N, Nz]."""
    model = with_encoder(model)
    device = _device(model)
    return torch.cat([
        model.encode(x[i:i + batch_size].to(device))[0].cpu() for i in range(0, len(x), batch_size)
    ])


@torch.no_grad()
def reconstruct(model, x):
    """The decoder's mean at the posterior mean of each point of x: [N, D]."""
    model = with_encoder(model)
    device = _device(model)
    return model.mean_x(model.encode(x.to(device))[0]).cpu()


@torch.no_grad()
def interpolation_path(model, x_a, x_b, steps=10):
    """The decoder's means at z = (1 - t) z_a + t z_b, t = 0 ... 1 in `steps` steps (ends included),
    z_a and z_b the posterior means of x_a and x_b ([N, D] each): [N * steps, D], pair by pair."""
    model = with_encoder(model)
    device = _device(model)
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]
    z_a, z_b = model.encode(x_a.to(device))[0][:, None], model.encode(x_b.to(device))[0][:, None]
    return model.mean_x((1 - t) * z_a + t * z_b).reshape(-1, model.x_dim).cpu()


@torch.no_grad()
def prior_means(model, n=100, seed=0):
    """The decoder's means at n draws z ~ N(0, I) (the same z for every model of one Nz and seed):
    [n, D]."""
    model = model_of(model)
    z = torch.randn(n, model.z_dim, generator=torch.Generator().manual_seed(seed))
    return model.mean_x(z.to(_device(model))).cpu()


# ---- the figures ---------------------------------------------------------------------------------

def manifold(model, n=20, dims=(0, 1), ax=None, title=None):
    """Kingma & Welling's Figure 4: the decoder's means at z = Φ⁻¹(u), u on an n x n grid of the
    unit square (Nz > 2: in dimensions `dims`, the others 0)."""
    vae = model_of(model)
    fig, ax = _axes(ax, (9, 9.5))
    figures.image_panel(
        ax, manifold_means(vae, n, dims), image_shape(vae), nrow=n, title=title
        or f"Nz = {vae.z_dim}: decoder means at z = Φ⁻¹(u), u on a {n} x {n} grid")
    ax.set(ylabel=f"z{dims[0] + 1} →", xlabel=f"z{dims[1] + 1} →")
    return fig


def latent_scatter(model, x, labels=None, ax=None, title=None, label_name="label"):
    """The posterior means of the points x, coloured by `labels` (one colour each, legend; None: one
    colour). With Nz > 2 the means are projected on their first two principal axes (PCA)."""
    import matplotlib.pyplot as plt
    z = latent_means(model, x)
    axis_names = ("z1 (posterior mean)", "z2 (posterior mean)")
    if z.shape[1] > 2:
        centred = z - z.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        z = centred @ v[:2].T
        axis_names = ("first principal axis of the posterior means", "second principal axis")
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], 1)
        axis_names = ("z1 (posterior mean)", "")
    fig, ax = _axes(ax, (7, 6))
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.6, rasterized=True)
    else:
        labels = torch.as_tensor(labels)
        values = sorted(set(labels.tolist()))
        cmap = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
        for i, value in enumerate(values):
            chosen = z[labels == value]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=4, alpha=0.6, color=cmap(i % cmap.N),
                       label=str(value), rasterized=True)
        ax.legend(title=label_name, markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  frameon=False)
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1],
           title=title or f"Nz = {model_of(model).z_dim}: posterior means of {len(x)} points")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def _models(models):
    """{label: model} from one model (or run) or a dict of them."""
    if isinstance(models, dict) and not ("model" in models and "config" in models):
        return models
    return {"model": models}


def reconstructions(models, x, title=None, data_label="data"):
    """The points x (first row) and each model's reconstruction of them (a row per model: the
    decoder's mean at the posterior mean), for one model or a dict {label: model or run}."""
    import matplotlib.pyplot as plt
    models = _models(models)
    shape = image_shape(next(iter(models.values())))
    rows = [(data_label, x)] + [(label, reconstruct(m, x)) for label, m in models.items()]
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(12,
                                                        1.2 + 0.9 * len(x)), 1.2 * len(rows) + 0.6),
                             squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows):
        figures.image_panel(ax, images, shape, nrow=len(x))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=12)
    fig.suptitle(title or "data and reconstructions (decoder mean at the posterior mean)")
    fig.tight_layout()
    return fig


def interpolations(model, x_a, x_b, steps=10, title=None):
    """For each pair (x_a[i], x_b[i]), the decoder's means along the straight line between their
    posterior means, framed by the two points themselves."""
    import matplotlib.pyplot as plt
    shape = image_shape(model)
    path = interpolation_path(model, x_a, x_b, steps)
    fig, axes = plt.subplots(1, 3, figsize=(12, 1.05 * len(x_a) + 0.6), width_ratios=[1, steps, 1],
                             layout="constrained")
    figures.image_panel(axes[0], x_a, shape, nrow=1, title="start")
    figures.image_panel(axes[1], path, shape, nrow=steps, title="t = 0  →  1")
    figures.image_panel(axes[2], x_b, shape, nrow=1, title="end")
    fig.suptitle(
        title
        or "decoder means along z = (1 - t) z_start + t z_end, the posterior means of two points")
    return fig


def prior_samples(models, n=100, nrow=10, seed=0, title=None):
    """The decoder's means at z ~ N(0, I) (Kingma & Welling's Figure 5): one panel per model of a
    dict {label: model or run}, or one panel for a single model."""
    import matplotlib.pyplot as plt
    models = _models(models)
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4.6), squeeze=False)
    for ax, (label, m) in zip(axes[0], models.items()):
        figures.image_panel(ax, prior_means(m, n, seed), image_shape(m), nrow=nrow,
                            title=label if len(models) > 1 else None)
    fig.suptitle(title or "decoder means at z ~ N(0, I)")
    fig.tight_layout()
    return fig


@torch.no_grad()
def recognition_stats(model, x, seed=0):
    """How a recognition model q(z|x) sees the data `x` and the generative model's dreams
    (z ~ p(z), x ~ p(x|z), as many as x, drawn with `seed`), as a dict of numbers: the KL to the
    prior on x split into its part from the means, 0.5 |mu|^2, and from the variances,
    0.5 (s^2 - 1 - log s^2); the RMS posterior mean on x and on dreams; the mean pixel of each; and
    the sleep loss -log q(z|x) on dreams beside the prior's entropy, its value for a q that learned
    nothing."""
    from vae_core import log_normal
    model = with_encoder(model)
    x = x.to(_device(model))
    mu, logvar = model.encode(x)
    torch.manual_seed(seed)
    z = torch.randn(len(x), model.z_dim).to(x.device)
    dreams = model.sample_x(z)
    dream_mu, dream_logvar = model.encode(dreams)
    return {"KL from the means": 0.5 * mu.pow(2).sum(-1).mean().item(),
            "KL from the variances": 0.5 * (logvar.exp() - 1 - logvar).sum(-1).mean().item(),
            "RMS mean, data": mu.pow(2).mean().sqrt().item(),
            "RMS mean, dreams": dream_mu.pow(2).mean().sqrt().item(),
            "mean pixel, dreams": dreams.mean().item(), "mean pixel, data": x.mean().item(),
            "sleep loss on dreams": -log_normal(z, dream_mu, dream_logvar).mean().item(),
            "prior's entropy": 0.5 * model.z_dim * math.log(2 * math.pi * math.e)}
