"""environment.yml (conda) and requirements.txt (pip, `make setup`) install the same packages at the same pins."""
import re

import yaml

from conftest import ROOT


def requirements(lines, folder):
    """{name: pin} of pip requirement lines, following `-r FILE` includes (FILE relative to `folder`)."""
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            included = folder / line[2:].strip()
            pins.update(requirements(included.read_text().splitlines(), included.parent))
        elif line and not line.startswith("-"):
            name, pin = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*==\s*(\S+)", line).groups()
            pins[name.lower()] = pin
    return pins


def conda_sections():
    """(conda's own packages, the pip list) of environment.yml. Conda runs pip on that list from environment.yml's
    folder, so an `-r requirements.txt` there is the file beside it."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    [pip] = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return [d for d in env["dependencies"] if isinstance(d, str)], pip


def test_environment_yml_installs_requirements_txt_at_its_pins():
    conda, pip = conda_sections()
    pins = requirements([line for line in pip if line != "-e ."], ROOT)
    assert pins == requirements((ROOT / "requirements.txt").read_text().splitlines(), ROOT)
    assert {"ipywidgets", "ipyevents", "torch", "papermill"} <= set(pins)  # the explorer's widgets too
    assert "-e ." in pip  # the project itself, as make setup installs it
    # conda itself installs only Python (the version pyproject.toml asks for) and pip: no second list to drift
    assert sorted(re.split(r"[=<>]", d)[0] for d in conda) == ["pip", "python"]
    python = next(d for d in conda if d.startswith("python"))
    wanted = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, wanted.split(".")))
