"""The code's shape: vae_core knows no file and no other module of the project, no two modules of the
project import each other in a loop, and each part of vae_core stays readable in one sitting."""
import ast
import os
import subprocess
import sys

import vae_core as vc
from conftest import ROOT


def modules(package):
    """{module name: path} of a package of the project: its modules and the package itself."""
    folder = ROOT / package
    return {**{f"{package}.{p.stem}": p for p in sorted(folder.glob("*.py")) if p.stem != "__init__"},
            package: folder / "__init__.py"}


VAE_CORE = modules("vae_core")
PROJECT = {**VAE_CORE, **modules("aevb")}


def imported(path):
    """Every module `path` imports, at its top or inside a function: 'a.b' for `import a.b` and
    `from a.b import c`, and 'a.b' for `from a import b` where a.b is a module of the project."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in PROJECT)
    return names


def project_imports(path):
    """The project's modules that the file at `path` imports (a package alone, 'aevb' or 'vae_core',
    only when nothing below it)."""
    names = imported(path)
    return sorted(n for n in names if n in PROJECT and PROJECT[n] != path
                  and not (n in ("aevb", "vae_core") and any(m.startswith(f"{n}.") for m in names)))


def find_loop(graph):
    """A list of modules that import each other in a loop, or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module not in done:
            path.append(module)
            for other in graph.get(module, ()):
                if loop := visit(other):
                    return loop
            path.pop()
            done.add(module)
        return None

    return next((loop for module in graph if (loop := visit(module))), None)


def test_vae_core_imports_torch_numpy_and_the_standard_library_only():
    assert set(VAE_CORE) == {"vae_core", "vae_core.model", "vae_core.algorithms", "vae_core.training"}
    for module, path in VAE_CORE.items():
        tops = {name.split(".")[0] for name in imported(path)}
        assert tops - sys.stdlib_module_names <= {"torch", "numpy", "vae_core"}, (module, tops)
        assert all(name.startswith("vae_core") for name in project_imports(path)), module


def test_no_import_loop_between_the_project_modules():
    graph = {module: project_imports(path) for module, path in PROJECT.items()}
    # the parse sees the imports there are, lazy ones inside functions included
    assert {"vae_core", "aevb.runs", "aevb.estimators", "aevb.data"} <= set(graph["aevb.experiment"])
    assert "vae_core" in graph["aevb.runs"] and "aevb.runs" in graph["aevb.grid"]
    assert {"vae_core.model", "vae_core.algorithms"} <= set(graph["vae_core.training"])
    assert find_loop(graph) is None, " -> ".join(find_loop(graph))


def test_an_import_loop_is_found(tmp_path):
    core, other = tmp_path / "core.py", tmp_path / "other.py"
    core.write_text("import math\n\n\ndef f():\n    from aevb import runs\n")
    other.write_text("import vae_core as vc\n")
    assert "aevb.runs" in project_imports(core) and project_imports(other) == ["vae_core"]
    assert find_loop({"vae_core": ["aevb.runs"], "aevb.runs": ["aevb.files", "vae_core"], "aevb.files": []}) \
        == ["vae_core", "aevb.runs", "vae_core"]
    assert find_loop({"vae_core": [], "aevb.runs": ["vae_core", "aevb.files"], "aevb.files": []}) is None


def test_each_part_of_vae_core_is_readable_in_one_sitting():
    """vae_core in parts by concern (model and objectives, algorithms, training loop), each at most
    300 lines; their lines are held to 100 characters by the linter (test_the_code_passes_the_linter)."""
    for module, path in VAE_CORE.items():
        assert len(path.read_text().splitlines()) <= 300, f"{module}: split it by concern"
    assert {"aevb", "wake_sleep", "mcem", "iwae"} <= set(vc.ALGORITHMS)
    source = "".join(path.read_text() for path in VAE_CORE.values())
    for stale in ("one loop for the three algorithms", "train_aevb", "train_wake_sleep", "train_mcem"):
        assert stale not in source


def test_every_public_name_of_vae_core_is_one_import_away():
    """`import vae_core as vc` gives each part's public names, the very objects its part defines."""
    import vae_core
    for module in (vae_core.model, vae_core.algorithms, vae_core.training):
        for name, value in vars(module).items():
            if not name.startswith("_") and getattr(value, "__module__", module.__name__) == module.__name__ \
                    and not isinstance(value, type(vae_core)):
                assert getattr(vae_core, name, None) is value, f"vae_core.{name} ({module.__name__})"
    assert sorted(vae_core.__all__) == sorted(set(vae_core.__all__))


def test_the_training_code_hash_covers_every_part_of_vae_core():
    from aevb.runs import TRAINING_CODE
    assert {str(p.relative_to(ROOT)) for p in VAE_CORE.values()} <= set(TRAINING_CODE)


def make_variable(name):
    """A variable of the Makefile as make expands it (its $(shell ...) calls run), split into words."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)", f"print-{name}"],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_figure_notebooks_are_rerun_when_any_project_module_they_import_changes(tmp_path):
    """make re-executes a figure notebook when a file of FIGURE_CODE changes: it must list every module of
    the project that a figure notebook imports, directly or through another module."""
    import json
    from aevb.figures import notebooks
    graph = {module: project_imports(path) for module, path in PROJECT.items()}
    needed = set()
    for name in notebooks():
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = tmp_path / f"{name}.py"
        code.write_text("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
        todo = project_imports(code)
        assert todo, f"{name}: no import of the project found"
        while todo:
            module = todo.pop()
            if module not in needed:
                needed.add(module)
                todo += graph[module]
    listed = set(make_variable("FIGURE_CODE"))
    missing = sorted(str(PROJECT[m].relative_to(ROOT)) for m in needed if str(PROJECT[m].relative_to(ROOT)) not in listed)
    assert not missing, f"Makefile's FIGURE_CODE lacks {missing}"
    assert "published_numbers.csv" in listed and {"aevb/latent.py", "aevb/catalog.py"} <= listed
    # nothing more than what they import: a module no figure notebook reads does not rerun them
    assert listed - {"published_numbers.csv"} == {str(PROJECT[m].relative_to(ROOT)) for m in needed} | {
        "aevb/__init__.py", "vae_core/__init__.py"}


def test_every_mutant_of_the_mutation_check_still_applies():
    """scripts/mutation_check.py plants each mutant by exact text: each text must be in its file once, or
    the mutant no longer switches its behaviour off (and the check stops before it runs)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mutation_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    stale = [(name, path, text) for name, (_, edits) in mutation_check.MUTANTS.items() for path, text, _ in edits
             if (ROOT / path).read_text().count(text) != 1]
    assert not stale, stale


# ---- the linter: ruff, configured in pyproject.toml ([tool.ruff]) ---------------------------------------------
def ruff(*args):
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_the_code_passes_the_linter():
    """No line over 100 characters in the package, vae_core, scripts and bench, and none of pyflakes' or
    pycodestyle's errors anywhere (`ruff check` reads its settings from pyproject.toml)."""
    result = ruff(str(ROOT))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_linter_refuses_a_line_of_101_characters(tmp_path):
    (tmp_path / "long.py").write_text(f"x = {'1' * 97}\n")
    (tmp_path / "short.py").write_text(f"x = {'1' * 96}\n")
    config = ["--config", str(ROOT / "pyproject.toml")]
    assert "E501" in ruff(*config, str(tmp_path / "long.py")).stdout
    assert ruff(*config, str(tmp_path / "short.py")).returncode == 0


CELL_LINES = 35  # "about 30": a code cell reads at a glance; longer drawing goes to aevb/plots.py


def test_every_notebook_code_cell_is_short():
    """Every code cell of every notebook has at most CELL_LINES lines (a cell tagged `parameters` is the
    notebook's list of parameters, one a line, and is exempt): prose goes between cells, a figure is one call
    of aevb.plots, a finding one call of say."""
    import json
    long = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            lines = "".join(cell["source"]).splitlines()
            if (cell["cell_type"] == "code" and "parameters" not in cell["metadata"].get("tags", [])
                    and len(lines) > CELL_LINES):
                long.append((path.name, cell.get("id"), len(lines)))
    assert not long, long


def markdown_breaks(text):
    """Where a Markdown file's blocks have been run together into a paragraph (a rewrap): a code fence
    or a table row that does not start its own line, or fences that do not pair."""
    import re
    lines = text.splitlines()
    fences = [n for n, line in enumerate(lines, 1) if line.lstrip().startswith("```")]
    broken = [f"line {n}: a code fence inside a line" for n, line in enumerate(lines, 1)
              if "```" in line.lstrip()[3:] or ("```" in line and not line.lstrip().startswith("```"))]
    broken += [f"line {n}: a table row inside a line" for n, line in enumerate(lines, 1)
               if re.search(r"\S\s+\|\s*-{3,}\s*\|", line) and not line.lstrip().startswith("|")]
    return broken + ([f"{len(fences)} code fences, an odd number"] if len(fences) % 2 else [])


def test_the_readme_and_docs_keep_their_code_blocks_and_tables():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not markdown_breaks(path.read_text()), (path.name, markdown_breaks(path.read_text()))
    assert markdown_breaks("text ```bash make test ``` more\n| a | b |\n|---|---|\n")  # a rewrapped block is found
    assert markdown_breaks("See:  | path | what | |---|---| | a | b |\n")
    assert not markdown_breaks("```bash\nmake test\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")


def test_aevb_imports_lists_a_files_project_imports_with_the_standard_library_alone(tmp_path):
    """make runs `python3 -m aevb.imports` before the project's environment exists: stdlib only; a notebook's
    shell and magic lines are not Python and are left out."""
    def run(*files):
        return subprocess.run(["python3", "-E", "-s", "-m", "aevb.imports", *files], cwd=ROOT, capture_output=True,
                              text=True)
    out = run("scripts/build_html.py")
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split()
    assert {"aevb/figures.py", "aevb/findings.py", "aevb/paths.py"} <= set(listed)
    assert "scripts/build_html.py" not in listed and "aevb/experiment.py" not in listed
    out = run("scripts/no_such_file.py")
    assert out.returncode != 0 and "no such file: scripts/no_such_file.py" in out.stderr
    from aevb import imports
    notebook = tmp_path / "n.ipynb"
    notebook.write_text('{"cells": [{"cell_type": "code", "source": ["%matplotlib inline\\n", "from aevb import latent\\n"]},'
                        ' {"cell_type": "markdown", "source": ["import aevb.grid"]}]}')
    assert imports.imported(imports.source(notebook)) == ["aevb/__init__.py", "aevb/latent.py"]
