"""Execute a notebook headlessly with papermill:
`run_notebook.py IN.ipynb OUT.ipynb [--params FILE.json] [-p NAME VALUE]...`

Adds what papermill's command line leaves out: a parameter name the notebook does not declare is an
error (papermill only logs it and trains with the default), and so is a value of another type than
the declared one (`name: type = default` in the parameters cell, or the default's type; an int
where a float is declared is fine); values are Python literals (`-p hidden "[500, 500]"`; for a
`str` parameter the text itself), `--params` reads them from a JSON file (`{"parameters": {...}}`,
as `python -m aevb.grid params` writes for a run; -p given after it wins), the kernel and working
directory are always set, and the exit code is non-zero when a cell fails. The executed notebook is
written either way: it is the evidence.

The kernel runs with CurveZMQ transport encryption (its kernelspec declares it; without it the
kernel warns, for every notebook, that it runs over TCP without encryption), and it is stopped at
once when the last cell has finished (a graceful shutdown waits seconds for the kernel's exit, and
nothing is left to say: every output is in). bench/overhead.py measures what these save.
"""
import argparse
import ast
import json
import os
import sys
import tempfile
from pathlib import Path

# jsonschema, which papermill imports through nbformat, compiles a grammar for the "iri" string
# format at import when rfc3987_syntax is installed (Jupyter's own packages install it): about 2 s
# of every notebook's start. The notebook schema has no such format, so the checker is not needed
# here.
sys.modules.setdefault("rfc3987_syntax", None)
import papermill  # noqa: E402
from traitlets.config import Config  # noqa: E402

from aevb import paths  # noqa: E402

KERNEL = "aevb"
# Seconds a kernel may take to start (papermill's default is 60): under make -j N on a loaded
# machine, several kernels starting at once have taken longer, failing a run before it began.
KERNEL_START_TIMEOUT = 600
# CurveZMQ keys for the kernel's sockets where its kernelspec supports them ("auto": ipykernel's
# does). On POSIX the sockets are Unix domain sockets in a folder of this process's own (`ipc`):
# over TCP the manager picks free ports, closes them and the kernel binds them seconds later, and
# under make -j N another kernel's client could take one of those ports in between (the kernel then
# dies before replying to kernel_info: seen once in 600 notebooks under make -j4). The folder must
# be named: jupyter_client's default for IPC is "kernel-ipc-1".. in the working directory, which
# kernels started at once share.
KERNEL_CONFIG = {"transport_encryption": "auto"}


def kernel_config(folder):
    """The kernel manager's settings, its sockets in `folder` where Unix sockets exist."""
    ipc = dict(transport="ipc", ip=str(Path(folder) / "kernel")) if os.name == "posix" else {}
    return Config({"KernelManager": {**KERNEL_CONFIG, **ipc}})
# A kernel that dies before it has run a cell is started again, once: nothing was computed yet.
KERNEL_START_ATTEMPTS = 2


def literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: -p dataset mnist


TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def declared_type(parameter):
    """The type a parameter is declared with (papermill's inferred type), else its default's
    type."""
    if parameter["inferred_type_name"] in TYPES:
        return TYPES[parameter["inferred_type_name"]]
    try:
        return type(ast.literal_eval(parameter["default"]))
    except (ValueError, SyntaxError):
        return None  # a default that is not a literal: any value


def type_error(name, value, parameter):
    """Why `value` does not fit the parameter's declared type, or None when it does."""
    kind = declared_type(parameter)
    if kind is None or kind is type(None):
        return None
    fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        fits = True  # an int where a float is declared is fine
    if fits:
        return None
    return (
        f"parameter {name}={value!r} is not allowed: a {type(value).__name__}, where the notebook "
        "declares "
        f"{name}: {kind.__name__} = {parameter['default']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--params", type=Path, help="a JSON file of parameters")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--kernel", default=KERNEL)
    args = parser.parse_args(argv)

    declared = papermill.inspect_notebook(str(args.notebook))
    params = json.loads(args.params.read_text())["parameters"] if args.params else {}
    for name, text in args.p:
        value = literal(text)
        is_str = name in declared and declared_type(declared[name]) is str
        params[name] = text if is_str and not isinstance(value, str) else value
    unknown = sorted(set(params) - set(declared))
    if unknown:
        sys.exit(f"{args.notebook}: unknown parameter(s) {', '.join(unknown)}; "
                 f"the notebook declares {', '.join(declared)}")
    wrong = [
        error for name, value in params.items()
        if (error := type_error(name, value, declared[name]))
    ]
    if wrong:
        sys.exit(f"{args.notebook}: " + "; ".join(wrong))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        try:
            # a short path: a Unix socket's name has at most 107 bytes
            with tempfile.TemporaryDirectory(prefix="aevb-", dir="/tmp" if os.name == "posix"
                                             else None) as sockets:
                papermill.execute_notebook(
                    str(args.notebook), str(args.output), parameters=params,
                    kernel_name=args.kernel, cwd=str(paths.ROOT), log_output=True,
                    progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
                    start_timeout=KERNEL_START_TIMEOUT, config=kernel_config(sockets),
                    shutdown_kernel="immediate")
            return
        except papermill.PapermillExecutionError as e:
            sys.exit(f"{args.notebook} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                     f"the executed notebook with the traceback is {args.output}")
        except RuntimeError as e:
            if "before replying to kernel_info" not in str(e) or attempt == KERNEL_START_ATTEMPTS:
                raise
            print(f"{args.notebook}: the kernel died before it started ({e}); starting another",
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
