"""Each dataset and each algorithm declared once, for everything that is not training: what the
loaders, a run's checks, the cost estimates, the figures and the findings need to know of it; and
where a run's parameters are declared (run_parameters).
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
# default  # what it means`, one a line (papermill's form). aevb.experiment.RunConfig still states
# the same names and defaults to check them (tests/test_experiment.py holds the two together);
# make's plan reads the defaults here, before the project's environment exists.
TRAIN_NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "train.ipynb"


def run_parameters(notebook=TRAIN_NOTEBOOK):
    """{name: default} of the training notebook's parameters cell, in its order."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    [cell] = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    tree = ast.parse("".join(cell["source"]))
    return {node.target.id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.AnnAssign)}
