"""The code's shape: vae_core knows no file and no other module of the project, no two modules of the
project import each other in a loop, and vae_core stays readable in one sitting."""
import ast
import sys

import vae_core as vc
from conftest import ROOT

PROJECT = {"vae_core": ROOT / "vae_core.py",
           **{f"aevb.{p.stem}": p for p in sorted((ROOT / "aevb").glob("*.py")) if p.stem != "__init__"},
           "aevb": ROOT / "aevb" / "__init__.py"}


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
    """The project's modules that the file at `path` imports ('aevb' alone only when nothing below it)."""
    names = imported(path)
    return sorted(n for n in names if n in PROJECT and PROJECT[n] != path
                  and not (n == "aevb" and any(m.startswith("aevb.") for m in names)))


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
    tops = {name.split(".")[0] for name in imported(PROJECT["vae_core"])}
    assert tops - sys.stdlib_module_names <= {"torch", "numpy"}, tops - sys.stdlib_module_names
    assert project_imports(PROJECT["vae_core"]) == []


def test_no_import_loop_between_the_project_modules():
    graph = {module: project_imports(path) for module, path in PROJECT.items()}
    # the parse sees the imports there are, lazy ones inside functions included
    assert {"vae_core", "aevb.runs", "aevb.estimators", "aevb.data"} <= set(graph["aevb.experiment"])
    assert "vae_core" in graph["aevb.runs"] and "aevb.runs" in graph["aevb.grid"]
    assert find_loop(graph) is None, " -> ".join(find_loop(graph))


def test_an_import_loop_is_found(tmp_path):
    core, other = tmp_path / "core.py", tmp_path / "other.py"
    core.write_text("import math\n\n\ndef f():\n    from aevb import runs\n")
    other.write_text("import vae_core as vc\n")
    assert "aevb.runs" in project_imports(core) and project_imports(other) == ["vae_core"]
    assert find_loop({"vae_core": ["aevb.runs"], "aevb.runs": ["aevb.files", "vae_core"], "aevb.files": []}) \
        == ["vae_core", "aevb.runs", "vae_core"]
    assert find_loop({"vae_core": [], "aevb.runs": ["vae_core", "aevb.files"], "aevb.files": []}) is None


def test_vae_core_is_readable_in_one_sitting():
    source = PROJECT["vae_core"].read_text()
    assert len(source.splitlines()) <= 480
    train = next(node for node in ast.parse(source).body if getattr(node, "name", None) == "train")
    assert train.end_lineno - train.lineno + 1 <= 90
    assert {"aevb", "wake_sleep", "mcem", "iwae"} == set(vc.ALGORITHMS)
    for stale in ("one loop for the three algorithms", "train_aevb", "train_wake_sleep", "train_mcem"):
        assert stale not in source


def makefile_list(name):
    """A `NAME := a b \\ c` list of the Makefile, its continued lines joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{name} :="))
    return line.split(":=", 1)[1].split()


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
    listed = set(makefile_list("FIGURE_CODE"))
    missing = sorted(str(PROJECT[m].relative_to(ROOT)) for m in needed if str(PROJECT[m].relative_to(ROOT)) not in listed)
    assert not missing, f"Makefile's FIGURE_CODE lacks {missing}"
    assert "published_numbers.csv" in listed and {"aevb/latent.py", "aevb/catalog.py"} <= listed
