"""Where things live. Every path the project reads or writes by default is named here."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# every number the papers publish, and how we judge it
PUBLISHED_NUMBERS = ROOT / "published_numbers.csv"
NOTEBOOKS = ROOT / "notebooks"
# finished paper-scale runs (10^8 samples), committed as data without their models: config, history,
# metrics and provenance.json (aevb.published_runs); the scorecard judges the rows at that scale on
# them wherever a profile's own runs trained too few samples
PAPER_SCALE = ROOT / "results" / "paper-scale"


def data_dir():
    """The data folder: $VAE_DATA_DIR, or data/ in the repository."""
    return Path(os.environ.get("VAE_DATA_DIR") or ROOT / "data")


def resolve(path, writing=False):
    """A path given to the project, relative ones from the repository root whatever the working
    directory (so "runs/smoke/..." means the same from notebooks/ as from the repository). For
    reading, a relative path that exists from the working directory is taken from there; for writing
    (`writing=True`: a run folder to train into) never, so that nothing lands inside whatever folder
    a process happens to run in."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return path.absolute() if not writing and path.exists() else ROOT / path
