"""The explorer's widgets (aevb.explore) on small finished runs, driven as JupyterLab drives them: by
setting widget values. (tests/test_lab.py opens it in a real JupyterLab in Chromium.)"""
import io

import pytest
import torch
from PIL import Image

from aevb import explore, latent
from test_catalog import finished_run

pytest.importorskip("ipywidgets")


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    models = {}
    for algorithm, z_dim, protocol in (("aevb", 2, "report"), ("wake_sleep", 2, "report"), ("aevb", 3, "report"),
                                       ("mcem", 2, "fig3n1000")):
        name = f"mnist/{algorithm}_z{z_dim}_{protocol}_s1"
        models[name] = finished_run(root / "smoke" / name, algorithm, z_dim, protocol=protocol).eval()
    return root, models


def pixels(png):
    import numpy as np
    return torch.as_tensor(np.array(Image.open(io.BytesIO(png)).convert("L")), dtype=torch.float32)


def test_the_choosers_offer_the_finished_runs_and_a_slider_moves_the_decoder(runs):
    root, models = runs
    e = explore.Explorer(root=root, points=40, latent_dim=2)
    assert e.profile.options == ("smoke",)
    assert e.selection() == {"dataset": "mnist", "protocol": "fig3n1000", "algorithm": "mcem", "latent_dim": 2,
                             "seed": 1}  # the first protocol; the others are offered
    assert e.choosers["protocol"].options == ("fig3n1000", "report")
    e.choosers["protocol"].value = "report"
    assert e.choosers["algorithm"].options == ("aevb", "wake_sleep") and e.selection()["algorithm"] == "aevb"
    assert e.choosers["latent_dim"].options == (2, 3) and e.selection()["latent_dim"] == 2
    model = models["mnist/aevb_z2_report_s1"]
    assert len(e.z_sliders.children) == 2 and e.plane.layout.display is None
    before, plane = e.decoded.value, e.plane.value
    e.z_sliders.children[0].value = 1.5
    e.z_sliders.children[1].value = -0.5
    assert e.decoded.value != before and e.plane.value != plane
    with torch.no_grad():
        expected = model.mean_x(torch.tensor([[1.5, -0.5]]))
    assert e.decoded.value == explore.png(expected, (28, 28), nrow=1, scale=6)  # the decoder's mean at that z
    shown = pixels(e.decoded.value)
    assert shown.shape == (28 * 6, 28 * 6)  # each pixel 6 x 6
    assert torch.allclose(shown[6 * 10 + 3, 6 * 14 + 3] / 255, expected[0, 10 * 28 + 14], atol=1 / 255)


def test_the_points_show_every_algorithms_reconstruction_and_the_interpolation(runs):
    root, models = runs
    e = explore.Explorer(root=root, points=40, protocol="report", latent_dim=2)
    assert list(e.companions) == ["aevb", "wake_sleep"]
    assert e.pairs_rows.value == "rows: test points, aevb, wake-sleep"
    x = e.x[[3, 7]]
    e.digit_a.value, e.digit_b.value = 3, 7
    rows = [x] + [latent.reconstruct(models[f"mnist/{a}_z2_report_s1"], x) for a in ("aevb", "wake_sleep")]
    assert e.pairs.value == explore.png(torch.cat(rows), (28, 28), nrow=2, scale=3)
    path = latent.interpolation_path(models["mnist/aevb_z2_report_s1"], x[:1], x[1:], steps=10)
    assert e.path.value == explore.png(path, (28, 28), nrow=10, scale=3)
    assert e.digit_a.max == len(e.x) - 1 == 39


def test_another_nz_gets_its_sliders_and_mcem_no_encoder_views(runs):
    root, _ = runs
    e = explore.Explorer(root=root, points=40, protocol="report", latent_dim=2, sliders=2)
    e.choosers["latent_dim"].value = 3
    assert len(e.z_sliders.children) == 2 and "z3 to z3 stay 0" in e.status.value  # at most `sliders` sliders
    assert e.plane.layout.display == "none" and e.run["name"] == "mnist/aevb_z3_report_s1"
    e.choosers["protocol"].value = "fig3n1000"
    assert e.selection()["algorithm"] == "mcem" and e.path.value == b"" and e.plane.layout.display == "none"
    assert list(e.companions) == []  # MCEM's model has no trained recognition model to reconstruct with


def test_no_finished_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run in any profile below"):
        explore.Explorer(root=tmp_path)
    (tmp_path / "smoke").mkdir()
    with pytest.raises(FileNotFoundError, match="no finished run in any profile"):
        explore.sources(root=tmp_path, profile="smoke")


def test_a_click_or_a_drag_on_the_plane_moves_z_there(runs):
    root, models = runs
    e = explore.Explorer(root=root, points=40, protocol="report", latent_dim=2)
    to_z, width, height = e._to_z
    pixel = to_z.inverted().transform((1.25, -0.5))  # where z = (1.25, -0.5) is drawn, from the bottom left
    shown = width / 2  # the page draws the image at half its size
    event = {"type": "click", "relativeX": pixel[0] / 2, "relativeY": (height - pixel[1]) / 2, "boundingRectWidth": shown}
    e.click(event)
    assert [s.value for s in e.z_sliders.children] == pytest.approx([1.25, -0.5], abs=1e-3)
    with torch.no_grad():
        assert e.decoded.value == explore.png(models["mnist/aevb_z2_report_s1"].mean_x(e.z()), (28, 28), nrow=1, scale=6)
    e.click({**event, "type": "mousemove", "buttons": 0, "relativeX": 0})  # a move without the button: nothing
    assert e.z_sliders.children[0].value == pytest.approx(1.25, abs=1e-3)
    e.click({**event, "type": "mousemove", "buttons": 1, "relativeX": 0, "relativeY": 0})  # a drag to the corner
    assert [s.value for s in e.z_sliders.children] == [s.min for s in e.z_sliders.children[:1]] + [
        e.z_sliders.children[1].max]  # clipped to the sliders' range
