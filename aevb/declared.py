"""Each dataset and each algorithm declared once, for everything that is not training: what the
loaders, a run's checks, the cost estimates, the figures and the findings need to know of it; and
where a run's parameters are declared (`parameters`: the training notebook's parameters cell,
from which aevb.experiment.RunConfig is made).
Python's standard library only, so that make's plan and its list of outputs can read it before the
project's environment exists (aevb/progress.py, aevb/figures.py). How an algorithm trains, its
options and whether it has a bound to evaluate are vae_core's (vae_core.ALGORITHMS); a test holds
the two lists to the same names."""
import ast
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dataset:
    title: str  # as figures and findings name it
    image_shape: tuple  # (rows, columns) of an image, row-major
    likelihood: str  # the decoder's p(x|z) (Kingma & Welling, Sec. 5)
    binarize: tuple  # the binarizations it has ("none": grey levels)
    train_points: dict  # the training set's points, per binarization
    test_points: int
    label_name: str  # what its labels are

    @property
    def x_dim(self):
        rows, columns = self.image_shape
        return rows * columns


FREY_N_TEST = 200  # Frey Face: a fixed random 200 of the 1965 frames are the test set
DATASETS = {
    # LeCun's 60,000 + 10,000 digits; Larochelle's statically binarized set trains on its 50,000
    "mnist": Dataset("MNIST", (28, 28), "bernoulli", ("none", "dynamic", "static"),
                     {"none": 60_000, "dynamic": 60_000, "static": 50_000}, 10_000, "digit"),
    # Frey Face: 1965 frames of 28 rows of 20 pixels, grey levels only, a Gaussian decoder
    "frey": Dataset("Frey Face", (28, 20), "gaussian", ("none",), {"none": 1965 - FREY_N_TEST},
                    FREY_N_TEST, "label"),
}


def dataset(name):
    """The declaration of dataset `name`, or a clear error naming the ones there are."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: expected one of {list(DATASETS)}")
    return DATASETS[name]


@dataclass(frozen=True)
class Algorithm:
    label: str  # as figures, tables and findings name it
    color: str  # its colour in every figure
    # forward passes of (encoder, decoder) per training sample and decoder sample: a backward pass
    # costs about two forward ones (aevb.progress.training_flops_per_sample)
    encoder_passes: int
    decoder_passes: int


MCEM_LEAPFROG = 10  # vae_core.MCEM: one HMC transition of 10 leapfrog steps per minibatch
ALGORITHMS = {
    "aevb": Algorithm("AEVB", "tab:blue", 3, 3),
    # wake: q forward, p forward and backward; sleep: p forward, q forward and backward
    "wake_sleep": Algorithm("wake-sleep", "tab:orange", 4, 4),
    # the chains' leapfrog gradients and the acceptance test (the M-step's updates: per run)
    "mcem": Algorithm("MCEM", "tab:green", 0, 3 * (MCEM_LEAPFROG + 1)),
    "iwae": Algorithm("IWAE", "tab:red", 3, 3),
}
LABEL = {name: a.label for name, a in ALGORITHMS.items()}
COLOR = {name: a.color for name, a in ALGORITHMS.items()}


def algorithm(name):
    """The declaration of algorithm `name`, or a clear error saying where to declare a new one."""
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm={name!r} is not declared in aevb/declared.py (ALGORITHMS: "
                         f"{list(ALGORITHMS)}): its label, colour and cost go there")
    return ALGORITHMS[name]


# A run's parameters are declared once, in notebooks/train.ipynb's parameters cell: `name: type =
# default  # what it means`, one a line (papermill's form); below the line PAGE_MARK the page's own
# (how it runs the run: threads, which grid run, where, progress), which are not part of a run's
# config. aevb.experiment.RunConfig is made from this declaration, make's plan reads its defaults
# here before the project's environment exists, and the run's code hash covers it
# (aevb.runs.code_hash).
TRAIN_NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "train.ipynb"
PAGE_MARK = "# ---- how this page runs it"
TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type  # str, int, float, bool or list
    default: object
    doc: str  # its comment in the parameters cell
    page: bool  # the page's own (below PAGE_MARK), not part of the run's config


def parameters_source(notebook=TRAIN_NOTEBOOK):
    """The source of the training notebook's parameters cell (the cell tagged `parameters`)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(tagged)}")
    return "".join(tagged[0]["source"])


def parameters(notebook=TRAIN_NOTEBOOK):
    """Every parameter of the training notebook's parameters cell, in its order, as declared there;
    a line that is not `name: type = literal  # doc` is refused, naming it."""
    source = parameters_source(notebook)
    lines = source.splitlines()
    page_from = next((i + 1 for i, line in enumerate(lines) if line.startswith(PAGE_MARK)), None)
    if page_from is None:
        raise ValueError(f"{notebook}: its parameters cell has no line {PAGE_MARK!r} before the "
                         "page's own parameters")
    out = []
    for node in ast.parse(source).body:
        line = lines[node.lineno - 1]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(node.annotation, ast.Name) and node.annotation.id in TYPES
                and node.value is not None and "  # " in line):
            raise ValueError(
                f"{notebook}, parameters cell, line {node.lineno}: {line!r} is not "
                f"`name: type = default  # what it means` with a type of {list(TYPES)}")
        default = ast.literal_eval(node.value)
        kind = TYPES[node.annotation.id]
        if type(default) is not kind and not (kind is float and type(default) is int):
            raise ValueError(f"{notebook}, parameters cell: {node.target.id}'s default "
                             f"{default!r} is not of type {kind.__name__}")
        out.append(Parameter(node.target.id, kind, default, line.split("  # ", 1)[1].strip(),
                             node.lineno > page_from))
    return out


def run_parameters(notebook=TRAIN_NOTEBOOK):
    """{name: default} of a run's parameters (the page's own left out), in their order."""
    return {p.name: p.default for p in parameters(notebook) if not p.page}
