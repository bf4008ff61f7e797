"""The latent-space views (aevb.latent) on a small model: the arrays they draw, and figures that show them."""
import math

import matplotlib
import pytest
import torch

import vae_core as vc
from aevb import latent
from aevb.figures import IMAGE_SHAPE, empty_panels, image_grid

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def model(z_dim=2, x_dim=784):
    torch.manual_seed(z_dim)
    return vc.VAE(x_dim, z_dim, hidden=(16,), init_std=0.5).eval()  # a large init: outputs depend on z


def images_of(ax):
    return [im.get_array() for im in ax.images]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_image_shape_follows_the_data_dimension():
    assert latent.image_shape(model()) == IMAGE_SHAPE["mnist"]
    assert latent.image_shape(model(x_dim=560)) == IMAGE_SHAPE["frey"] == (28, 20)
    assert latent.image_shape(model(x_dim=16)) == (4, 4) and latent.image_shape(model(x_dim=12)) == (1, 12)


def test_the_manifold_is_the_decoder_mean_on_the_inverse_cdf_grid():
    m, n = model(), 5
    means = latent.manifold_means(m, n)
    assert means.shape == (n * n, 784)
    u = (torch.arange(n) + 0.5) / n  # the centres of n equal cells of the unit square
    normal = torch.distributions.Normal(0.0, 1.0)
    for i, j in ((0, 0), (0, 4), (3, 1), (4, 4), (2, 2)):
        z = normal.icdf(torch.tensor([[u[i], u[j]]]))  # row i: z1, column j: z2
        with torch.no_grad():
            assert torch.allclose(means[i * n + j], m.mean_x(z)[0], atol=1e-6), (i, j)
    assert torch.allclose(latent.manifold_grid(2)[0], normal.icdf(torch.tensor([0.25, 0.25])))
    assert torch.allclose(latent.manifold_grid(20)[:, 0].unique(), normal.icdf(torch.linspace(0.025, 0.975, 20)),
                          atol=1e-5)  # Kingma & Welling's 20 x 20 grid
    fig = latent.manifold(m, n)
    assert not empty_panels(fig)
    [shown] = images_of(fig.axes[0])
    assert shown.shape == image_grid(means, (28, 28), nrow=n).shape == (n * 29 + 1, n * 29 + 1)
    assert torch.allclose(torch.as_tensor(shown), torch.as_tensor(image_grid(means, (28, 28), nrow=n)))
    assert len(set(means.sum(1).round(decimals=3).tolist())) > n  # the tiles differ: the decoder depends on z


def test_the_manifold_of_a_larger_nz_is_a_slice_with_the_other_dimensions_at_zero():
    m = model(z_dim=4)
    z = latent.manifold_grid(3, 4, dims=(1, 3))
    assert (z[:, [0, 2]] == 0).all() and (z[:, [1, 3]] != 0).any()
    with torch.no_grad():
        assert torch.allclose(latent.manifold_means(m, 3, dims=(1, 3)), m.mean_x(z))
    for dims in [(0, 0), (0, 4), (1,)]:
        with pytest.raises(ValueError, match="two different latent dimensions below Nz = 4"):
            latent.manifold_grid(3, 4, dims)
    assert not empty_panels(latent.manifold(m, 3, dims=(1, 3)))


def test_the_latent_scatter_shows_each_points_posterior_mean_in_its_labels_colour():
    m, x = model(), torch.rand(60, 784)
    labels = torch.arange(60) % 3
    fig = latent.latent_scatter(m, x, labels)
    assert not empty_panels(fig)
    ax = fig.axes[0]
    with torch.no_grad():
        z = m.encode(x)[0]
    assert len(ax.collections) == 3
    for label, collection in enumerate(ax.collections):
        assert torch.allclose(torch.as_tensor(collection.get_offsets().data, dtype=torch.float32), z[labels == label])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    unlabelled = latent.latent_scatter(m, x).axes[0]
    assert len(unlabelled.collections) == 1 and len(unlabelled.collections[0].get_offsets()) == 60


def test_a_larger_nz_is_scattered_on_its_first_two_principal_axes():
    m, x = model(z_dim=6), torch.rand(80, 784)
    fig = latent.latent_scatter(m, x)
    points = torch.as_tensor(fig.axes[0].collections[0].get_offsets().data, dtype=torch.float64)
    z = latent.latent_means(m, x).double()
    z = z - z.mean(0)
    top = torch.linalg.eigvalsh(z.T @ z).flip(0)[:2]  # the two largest variances of the codes
    assert torch.allclose((points ** 2).sum(0), top, rtol=1e-3)
    assert "principal axis" in fig.axes[0].get_xlabel()


def test_reconstructions_show_the_data_and_each_models_decoder_mean_at_the_posterior_mean():
    a, b, x = model(), model(z_dim=3), torch.rand(5, 784)
    fig = latent.reconstructions({"A": a, "B": {"model": b, "config": {"algorithm": "aevb"}}}, x)
    assert not empty_panels(fig)
    assert [ax.get_ylabel() for ax in fig.axes] == ["data", "A", "B"]
    with torch.no_grad():
        rows = [x, a.mean_x(a.encode(x)[0]), b.mean_x(b.encode(x)[0])]
    for ax, row in zip(fig.axes, rows):
        [shown] = images_of(ax)
        assert torch.allclose(torch.as_tensor(shown), torch.as_tensor(image_grid(row, (28, 28), nrow=5)), atol=1e-6)
    assert len(latent.reconstructions(a, x).axes) == 2  # one model alone


def test_an_interpolation_runs_from_one_posterior_mean_to_the_other():
    m, x_a, x_b = model(), torch.rand(3, 784), torch.rand(3, 784)
    path = latent.interpolation_path(m, x_a, x_b, steps=7)
    assert path.shape == (21, 784)
    with torch.no_grad():
        z_a, z_b = m.encode(x_a)[0], m.encode(x_b)[0]
        assert torch.allclose(path[0::7], m.mean_x(z_a), atol=1e-6)
        assert torch.allclose(path[6::7], m.mean_x(z_b), atol=1e-6)
        assert torch.allclose(path[3], m.mean_x((z_a[0] + z_b[0]) / 2), atol=1e-6)
    fig = latent.interpolations(m, x_a, x_b, steps=7)
    assert not empty_panels(fig) and [len(ax.images) for ax in fig.axes] == [1, 1, 1]


def test_prior_samples_decode_the_same_seeded_z_for_every_model():
    a, b = model(), model()
    torch.manual_seed(1)
    b.decoder[0].weight.data.normal_()
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(latent.prior_means(a, 16, seed=3), a.mean_x(z))
        assert torch.equal(latent.prior_means(b, 16, seed=3), b.mean_x(z))
    fig = latent.prior_samples({"a": a, "b": b}, n=16, nrow=4)
    assert not empty_panels(fig) and [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert len(latent.prior_samples(a, n=16, nrow=4).axes) == 1


def test_a_model_without_a_recognition_model_is_refused_where_one_is_needed():
    run = {"name": "mnist/mcem_z2_x_s1", "model": model(), "config": {"algorithm": "mcem"}}
    x = torch.rand(4, 784)
    for view in (lambda: latent.latent_scatter(run, x), lambda: latent.reconstructions({"m": run}, x),
                 lambda: latent.interpolations(run, x[:2], x[2:])):
        with pytest.raises(ValueError, match="Monte Carlo EM: it trains no recognition model"):
            view()
    assert not empty_panels(latent.manifold(run, 4))  # its decoder is there
    with pytest.raises(TypeError, match="expected a trained vae_core.VAE"):
        latent.manifold("mnist/aevb_z2_report_s1")


def test_empty_panels_names_the_panels_that_show_nothing():
    fig, (full, empty) = plt.subplots(1, 2)
    full.plot([0, 1], [0, 1])
    empty.set_title("no runs")
    assert empty_panels(fig) == ["no runs"]
    empty.plot([0, 1], [float("nan"), float("nan")])  # no finite point: still empty
    assert empty_panels(fig) == ["no runs"]
    plt.close(fig)


def test_recognition_stats_split_the_kl_and_see_a_q_that_is_the_prior_as_the_prior():
    m, x = model(z_dim=3), torch.rand(400, 784)
    stats = latent.recognition_stats(m, x)
    with torch.no_grad():
        mu, logvar = m.encode(x)
        kl = vc.kl_to_standard_normal(mu, logvar).mean().item()
    assert stats["KL from the means"] + stats["KL from the variances"] == pytest.approx(kl, rel=1e-5)
    assert stats["KL from the means"] == pytest.approx(0.5 * mu.pow(2).sum(-1).mean().item(), rel=1e-6)
    assert stats["RMS mean, data"] == pytest.approx(mu.pow(2).mean().sqrt().item(), rel=1e-6)
    assert stats["mean pixel, data"] == pytest.approx(x.mean().item(), rel=1e-6)
    assert stats["prior's entropy"] == pytest.approx(1.5 * math.log(2 * math.pi * math.e))
    assert latent.recognition_stats(m, x) == stats  # the dreams are seeded
    # a recognition model that outputs the prior, N(0, I), whatever it sees: no KL, means at zero,
    # and a sleep loss on dreams that is the prior's entropy (up to its Monte Carlo error over 400 dreams)
    torch.nn.init.zeros_(m.encoder[-1].weight), torch.nn.init.zeros_(m.encoder[-1].bias)
    prior = latent.recognition_stats(m, x)
    assert prior["KL from the means"] == prior["KL from the variances"] == 0.0
    assert prior["RMS mean, data"] == prior["RMS mean, dreams"] == 0.0
    assert prior["sleep loss on dreams"] == pytest.approx(prior["prior's entropy"], abs=0.2)
    assert 0 < prior["mean pixel, dreams"] < 1  # Bernoulli draws
    with pytest.raises(ValueError, match="trains no recognition model"):
        latent.recognition_stats({"name": "mnist/mcem_z2_x_s1", "model": m, "config": {"algorithm": "mcem"}}, x)
