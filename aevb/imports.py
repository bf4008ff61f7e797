"""Which of the project's files a piece of code depends on: the modules of `aevb` and `vae_core` it
imports, directly or through one another, at the top of a file or inside a function, a submodule's
packages included (importing one runs their __init__). aevb.runs.TRAINING_CODE (the code a run's
hash covers) and the figure notebooks' code (make reruns a notebook when it changes) are derived
here rather than listed by hand. Python's standard library only: make reads it before the project's
environment exists."""
import ast
import json
from pathlib import Path

from aevb import paths

PACKAGES = ("aevb", "vae_core")


def module_file(module, root=paths.ROOT):
    """The project file of a dotted module name (aevb.x, vae_core.y, a package), or None."""
    parts = module.split(".")
    for path in (Path(*parts).with_suffix(".py"), Path(*parts, "__init__.py")):
        if (Path(root) / path).exists():
            return path.as_posix()
    return None


def source(path):
    """The code of a module, or of a notebook's code cells (its shell and magic lines left out)."""
    path = Path(path)
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n".join(line for c in cells if c["cell_type"] == "code"
                     for line in "".join(c["source"]).splitlines()
                     if not line.lstrip().startswith(("%", "!")))


def imported(code, root=paths.ROOT):
    """The project files that `code` (Python source) imports itself, sorted."""
    modules = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    parents = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)}
    return sorted({f for m in parents if m.split(".")[0] in PACKAGES
                   for f in [module_file(m, root)] if f})


def closure(entries, root=paths.ROOT):
    """`entries` (files, from the repository root: modules or notebooks) and every project module
    they import, directly or through another, sorted; the entries' own order kept first."""
    seen, todo = list(entries), []
    for entry in entries:
        todo += imported(source(Path(root) / entry), root)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.append(name)
            todo += imported(source(Path(root) / name), root)
    return [*entries, *sorted(set(seen) - set(entries))]


def main(argv=None):
    """For make: `python -m aevb.imports FILE...` prints the project modules the files import,
    directly or through another (the files themselves left out), one line, space-separated."""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="modules or notebooks, from the repository root")
    args = parser.parse_args(argv)
    missing = [f for f in args.files if not (paths.ROOT / f).exists()]
    if missing:
        raise SystemExit(f"aevb.imports: no such file: {', '.join(missing)}")
    print(" ".join(closure(args.files)[len(args.files):]))


if __name__ == "__main__":
    main()
