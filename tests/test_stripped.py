"""`make lab` for everyone (rooted at the repository, as root too), and notebooks committed without outputs:
each notebook in notebooks/ has none, and the git filter that `make setup` sets (nbstripout) stages a notebook
saved with outputs without them, keeping its cell ids."""
import json
import os
import shutil
import subprocess

import nbformat
import pytest

from conftest import PY, ROOT


def test_every_committed_notebook_has_no_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path.name, cell.id)
        stripped = subprocess.run([PY, "-m", "nbstripout", "--keep-id", "-t"], stdin=open(path), capture_output=True,
                                  text=True, check=True).stdout
        assert json.loads(stripped) == json.loads(path.read_text()), path.name  # the filter changes nothing


@pytest.mark.slow  # it runs make
def test_the_git_filter_make_setup_sets_stages_notebooks_without_outputs(tmp_path):
    repo = tmp_path / "clone"
    repo.mkdir()
    git = lambda *args: subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    git("init", "-q")
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    make = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "-C", str(repo), "--no-print-directory", "strip-outputs",
                           f"VENV={ROOT / '.venv'}", f"PYTHON={PY}"], capture_output=True, text=True, env=env)
    assert make.returncode == 0, make.stderr
    assert "nbstripout --keep-id" in git("config", "filter.nbstripout.clean").stdout
    nb = nbformat.read(ROOT / "notebooks" / "explore.ipynb", as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="trained\n")]
    nb.cells[2].execution_count = 3
    nbformat.write(nb, repo / "explore.ipynb")
    git("add", "explore.ipynb")
    staged = nbformat.reads(git("show", ":explore.ipynb").stdout, as_version=4)
    assert staged.cells[2].outputs == [] and staged.cells[2].execution_count is None
    assert [c.id for c in staged.cells] == [c.id for c in nb.cells]  # the ids kept: no churn in diffs
    assert nbformat.read(repo / "explore.ipynb", as_version=4).cells[2].outputs  # the file on disk keeps them
    again = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "-C", str(repo), "--no-print-directory",
                            "strip-outputs", f"VENV={ROOT / '.venv'}", f"PYTHON={PY}"], capture_output=True, text=True,
                           env=env)
    assert again.returncode == 0 and again.stdout == ""  # set once


@pytest.mark.slow  # it runs make
def test_make_lab_roots_jupyterlab_at_the_repository_and_allows_root():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "--no-print-directory", "lab"], capture_output=True, text=True,
                         env=env)
    assert dry.returncode == 0, dry.stderr
    [command] = [line for line in dry.stdout.splitlines() if "jupyter lab" in line]
    assert f"--ServerApp.root_dir={ROOT}" in command.split()
    assert ("--allow-root" in command.split()) == (os.getuid() == 0)  # JupyterLab refuses root without it
