"""The explorer of notebooks/explore.ipynb: ipywidgets over the finished runs.

Choose a profile, then a dataset, protocol, algorithm, Nz and seed among its finished runs; move z
with sliders and see the decoder's mean (Nz = 2: z among the test digits' codes, where a click or a
drag moves it, through ipyevents); pick two
test points and see their reconstructions by every algorithm of that setting and the interpolation
between them. `Explorer(...).widget` is what the notebook displays; each image is a PNG in an
ipywidgets.Image, redrawn by the kernel when a widget moves.
"""
import io

import torch

import vae_core as vc

from aevb import catalog, declared, figures, grid, latent, paths

KEYS = ("dataset", "protocol", "algorithm", "latent_dim", "seed")
LABEL = {
    "dataset": "dataset", "protocol": "protocol", "algorithm": "algorithm", "latent_dim": "Nz",
    "seed": "seed"
}
# the algorithms that train a recognition model: those with a bound to evaluate
ENCODERS = tuple(name for name, cls in vc.ALGORITHMS.items() if cls.has_bound)


def sources(runs_dir=None, profile=None, root=None):
    """{label: folder} of the runs to choose from: runs_dir alone (labelled `profile` or its name),
    else each profile's folder and runs/interactive/ that hold a finished run."""
    if runs_dir:
        folder = catalog.resolve(runs_dir)
        return {profile or folder.name: folder}
    root = catalog.runs_root(root)
    found = {
        p: root / p
        for p in [*grid.PROFILES, catalog.INTERACTIVE] if catalog.finished_runs(root / p)
    }
    if not found:
        raise FileNotFoundError(
            f"no finished run in any profile below {root}: train some first (make runs "
            "PROFILE=smoke takes minutes, or notebooks/train.ipynb)")
    if profile and profile not in found:
        raise FileNotFoundError(
            f"profile {profile!r} has no finished run in {root / profile}; these have: "
            f"{', '.join(found)}")
    return found


def png(images, shape, nrow, scale=4):
    """A PNG (bytes) of `images` ([N, D] in [0, 1]) tiled nrow to a row, each pixel scale x
    scale."""
    from PIL import Image
    tiled = figures.image_grid(images.clamp(0, 1), shape, nrow=nrow)
    image = Image.fromarray((tiled * 255).round().astype("uint8"))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="png")
    return buffer.getvalue()


def show(widget, png_bytes):
    """Put a PNG in an ipywidgets.Image at its own size (JupyterLab would stretch it to the page's
    width)."""
    from PIL import Image
    widget.value = png_bytes
    widget.layout.width = f"{Image.open(io.BytesIO(png_bytes)).width}px" if png_bytes else None


def figure_png(fig):
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class Explorer:
    """The widgets; `widget` is the box to display. profile / runs_dir as `sources`; `selected`:
    initial values of KEYS (e.g. latent_dim=2); sliders: at most this many z sliders (the other
    dimensions stay 0)."""

    def __init__(self, profile=None, runs_dir=None, root=None, sliders=10, points=1000, **selected):
        import ipywidgets as w
        from ipyevents import Event
        self.sources = sources(runs_dir, profile, root)
        self.max_sliders, self.points = sliders, points
        self._models, self._data, self._busy = {}, {}, False
        self._moving = False
        self.profile = w.Dropdown(
            options=list(self.sources),
            value=profile if profile in self.sources else next(iter(self.sources)),
            description="profile")
        self.choosers = {k: w.Dropdown(description=LABEL[k]) for k in KEYS}
        self.z_sliders = w.VBox()
        self.decoded = w.Image(format="png")
        self.plane = w.Image(format="png")
        self._events = Event(
            source=self.plane,
            watched_events=["click", "mousemove"],
            prevent_default_action=True,
            # a click or a drag on the plane moves z there
            throttle_or_debounce="throttle",
            wait=50)
        self._events.on_dom_event(self.click)
        self.digit_a = w.BoundedIntText(value=0, min=0, max=0, description="test point",
                                        layout=w.Layout(width="200px"))
        self.digit_b = w.BoundedIntText(value=1, min=0, max=1, description="and",
                                        layout=w.Layout(width="200px"))
        self.pairs = w.Image(format="png")
        self.pairs_rows = w.HTML()
        self.path = w.Image(format="png")
        self.status = w.HTML()
        self.profile.observe(lambda change: self._cascade(0), names="value")
        for i, key in enumerate(KEYS):
            self.choosers[key].observe(lambda change, i=i: self._cascade(i + 1), names="value")
        for box in (self.digit_a, self.digit_b):
            box.observe(lambda change: self._draw_points(), names="value")
        self.widget = w.VBox([
            w.HBox([self.profile, *self.choosers.values()], layout=w.Layout(flex_flow="row wrap")),
            self.status,
            w.HBox([
                self.z_sliders,
                w.VBox([w.HTML("<b>decoder mean at z</b>"), self.decoded]), self.plane
            ]),
            w.HBox([self.digit_a, self.digit_b]),
            w.HTML(
                "<b>test points and their reconstructions</b> (decoder mean at the posterior mean)"
            ),
            self.pairs_rows,
            self.pairs,
            w.HTML("<b>interpolation</b> between the two points' posterior means"),
            self.path,
        ])
        self._runs = []
        self._cascade(0, initial=selected)

    # ---- choosing a run ----
    def _cascade(self, level, initial=None):
        """Fill the choosers from `level` on with the values the finished runs allow, then load the
        run."""
        if self._busy:
            return
        self._busy = True
        try:
            if level == 0:
                self._runs = catalog.finished_runs(self.sources[self.profile.value])
            for i, key in enumerate(KEYS[level:], level):
                chosen = {k: self.choosers[k].value for k in KEYS[:i]}
                values = sorted(
                    {c[key]
                     for _, c in self._runs if all(c[k] == v for k, v in chosen.items())},
                    key=lambda v: (v != "aevb", v) if key == "algorithm" else v)
                want = (initial or {}).get(key, self.choosers[key].value)
                self.choosers[key].options = values
                self.choosers[key].value = want if want in values else (
                    values[0] if values else None)
        finally:
            self._busy = False
        self._load()

    def selection(self):
        return {k: self.choosers[k].value for k in KEYS}

    def _matching(self, **change):
        wanted = {**self.selection(), **change}
        return [(f, c) for f, c in self._runs if all(c[k] == v for k, v in wanted.items())]

    def _model(self, folder):
        if folder not in self._models:
            from aevb.runs import load_run
            self._models[folder] = load_run(folder)
        return self._models[folder]

    def _load(self):
        import ipywidgets as w
        found = self._matching()
        if not found:
            self.status.value = "no finished run here"
            return
        folder, config = found[0]
        self.run = self._model(folder)
        self.model = self.run["model"]
        key = (config["dataset"], config["binarize"], config.get("pixel_scale",
                                                                 255), config["test_size"])
        if key not in self._data:
            x, labels = catalog.test_data(self.run, self.points)
            self._data[key] = (x, labels)
        self.x, self.labels = self._data[key]
        # every algorithm with a recognition model, at this setting: their reconstructions side by
        # side
        self.companions = {}
        for algorithm in ENCODERS:
            others = [
                f for f, c in self._runs if c["algorithm"] == algorithm and all(
                    c[k] == config[k] for k in ("dataset", "protocol", "latent_dim", "seed"))
            ]
            if others:
                self.companions[algorithm] = self._model(others[0])["model"]
        shown = min(self.model.z_dim, self.max_sliders)
        # the sliders span the prior's +-3 standard deviations, and the test codes beyond
        self.reach = 3.0
        if config["algorithm"] in ENCODERS:
            self.reach = max(self.reach,
                             float(latent.latent_means(self.run, self.x).abs().max().ceil()))
        sliders = [
            w.FloatSlider(value=0.0, min=-self.reach, max=self.reach, step=0.05,
                          description=f"z{i + 1}", continuous_update=True, readout_format=".2f")
            for i in range(shown)
        ]
        for slider in sliders:
            slider.observe(lambda change: self._draw_z(), names="value")
        self.z_sliders.children = sliders
        self._scatter = None
        self.digit_a.max = self.digit_b.max = len(self.x) - 1
        where = folder.relative_to(paths.ROOT) if folder.is_relative_to(paths.ROOT) else folder
        self.status.value = (
            f"<code>{where}"
            f"</code>: test ELBO {self.run['metrics']['test_elbo']:.2f} nats after "
            f"{self.run['metrics']['samples']:,} samples" +
            (f"; z{shown + 1} to z{self.model.z_dim} stay 0" if shown < self.model.z_dim else ""))
        self._draw_z()
        self._draw_points()

    # ---- drawing ----
    def z(self):
        """The z the sliders set (the dimensions without a slider at 0): [1, Nz]."""
        z = torch.zeros(1, self.model.z_dim)
        for i, slider in enumerate(self.z_sliders.children):
            z[0, i] = slider.value
        return z

    @torch.no_grad()
    def _draw_z(self):
        if self._moving:
            return
        z = self.z()
        show(self.decoded, png(self.model.mean_x(z), latent.image_shape(self.model), nrow=1,
                               scale=6))
        if self.model.z_dim == 2 and self.run["config"]["algorithm"] != "mcem":
            show(self.plane, self._plane(z[0]))
            self.plane.layout.display = None
        else:
            self.plane.layout.display = "none"

    def _plane(self, z):
        """The test points' posterior means (coloured by label) with z marked: a PNG. Keeps the map
        from its pixels to z, for a click or a drag on it."""
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4.6, 4))
        latent.latent_scatter(
            self.run, self.x, self.labels, ax=ax,
            title="z among the test points' codes (click, drag)",
            label_name=declared.dataset(self.run["config"]["dataset"]).label_name)
        # the sliders' range: a fixed map
        ax.set(xlim=(-self.reach, self.reach), ylim=(-self.reach, self.reach))
        ax.set_aspect("equal", adjustable="box")
        ax.plot([z[0]], [z[1]], "k+", ms=18, mew=2.5)
        buffer = io.BytesIO()
        # at the figure's own dpi: its pixels are the display's
        fig.savefig(buffer, format="png", dpi=fig.dpi)
        self._to_z = (ax.transData.inverted(), fig.bbox.width, fig.bbox.height)
        plt.close(fig)
        return buffer.getvalue()

    def click(self, event):
        """A click, or a move with the button held, on the plane: z is where it points (ipyevents'
        event)."""
        if event.get("type") == "mousemove" and not event.get("buttons"):
            return
        to_z, width, height = self._to_z
        # the image as drawn on the page, to its pixels
        scale = width / (event.get("boundingRectWidth") or width)
        z1, z2 = to_z.transform((event["relativeX"] * scale, height - event["relativeY"] * scale))
        self.set_z(z1, z2)

    def set_z(self, *z):
        """Move the sliders to z (clipped to their range) and draw once."""
        self._moving = True
        try:
            for slider, value in zip(self.z_sliders.children, z):
                slider.value = float(min(max(value, slider.min), slider.max))
        finally:
            self._moving = False
        self._draw_z()

    @torch.no_grad()
    def _draw_points(self):
        if not hasattr(self, "model"):
            return
        shape = latent.image_shape(self.model)
        a, b = self.digit_a.value, self.digit_b.value
        x = self.x[[a, b]]
        rows = [x] + [latent.reconstruct(m, x) for m in self.companions.values()]
        show(self.pairs, png(torch.cat(rows), shape, nrow=2, scale=3))
        if self.run["config"]["algorithm"] in ENCODERS:
            show(
                self.path,
                png(latent.interpolation_path(self.model, x[:1], x[1:], steps=10), shape, nrow=10,
                    scale=3))
        else:
            show(self.path, b"")
        self.pairs_rows.value = "rows: " + ", ".join(
            ["test points", *(a.replace("_", "-") for a in self.companions)])
