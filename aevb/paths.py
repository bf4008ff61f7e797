"""Where things live. Every path the project reads or writes by default is named here."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# every number the papers publish, and how we judge it
PUBLISHED_NUMBERS = ROOT / "published_numbers.csv"
NOTEBOOKS = ROOT / "notebooks"


def data_dir():
    """The data folder: $VAE_DATA_DIR, or data/ in the repository."""
    return Path(os.environ.get("VAE_DATA_DIR") or ROOT / "data")
