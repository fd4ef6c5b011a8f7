"""The CLI's argument types: each parses one option's value or refuses it with one line,
`argument <name>: expected ..., got ...` (argparse adds the name), before any command runs."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

#: Exit statuses: a refused value (argparse's own), an error while running, Ctrl-C (128 + SIGINT).
EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `<prog>: <message>`, without the usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


class _Refused(Exception):
    """A value refused by a check that needs more than one argument or the file's contents;
    main prints it as argparse does a bad value."""

    def __init__(self, argument: str, expected: str, got: str):
        super().__init__(f"argument {argument}: expected {expected}, got {got}")


def _expected(expected: str, got: str) -> argparse.ArgumentTypeError:
    """The error a `type=` function raises; argparse prefixes 'argument --name: '."""
    return argparse.ArgumentTypeError(f"expected {expected}, got {got}")


# ---------------------------------------------------------------------------------------------
# Value types: each parses one command-line string or raises argparse.ArgumentTypeError.


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _expected("a positive integer", repr(text)) from None
    if value <= 0:
        raise _expected("a positive integer", repr(text))
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _expected("an integer >= 0", repr(text)) from None
    if value < 0:
        raise _expected("an integer >= 0", repr(text))
    return value


def _budget(text: str) -> float:
    """A size budget: a finite number >= 1 (times the all-int4 bytes)."""
    try:
        value = float(text)
    except ValueError:
        raise _expected("a number >= 1", repr(text)) from None
    if not 1.0 <= value < float("inf"):
        raise _expected("a number >= 1", repr(text))
    return value


def _shapes(text: str) -> list[tuple[int, int, int]]:
    """A preset name or 'MxKxN[,MxKxN...]' -> [(M, K, N), ...], every size positive."""
    from ..tools.workload import PRESETS, parse_shapes

    expected = f"a preset ({', '.join(PRESETS)}) or MxKxN[,MxKxN...] of positive integers"
    try:
        shapes = parse_shapes(text)
    except ValueError:
        raise _expected(expected, repr(text)) from None
    for shape in shapes:
        # parse_shapes reads any integers; sizes <= 0 are refused here, before a GPU sees them.
        if min(shape) <= 0:
            raise _expected(expected, f"{text!r} ({'x'.join(map(str, shape))} has a size <= 0)")
    return shapes


def _kernel_names(text: str) -> list[str]:
    """'tiled,rowwise' -> ['tiled', 'rowwise'], each a distinct kernel of the registries
    (f32 and int8 activations)."""
    from ..kernels import INT8_KERNELS
    from ..kernels import KERNELS as F32_KERNELS

    KERNELS = {**F32_KERNELS, **INT8_KERNELS}
    expected = f"comma-separated kernel names from {', '.join(KERNELS)}"
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in KERNELS]
    if unknown:
        raise _expected(expected, f"{text!r} (unknown: {', '.join(map(repr, unknown))})")
    if len(set(names)) != len(names):
        raise _expected(f"distinct kernel names from {', '.join(KERNELS)}", repr(text))
    return names


def _layer_shape(text: str) -> tuple[int, int]:
    """'NxK' -> (N, K), both positive."""
    n, _, k = text.lower().partition("x")
    try:
        n, k = int(n), int(k)
    except ValueError:
        raise _expected("NxK (out x in features), e.g. 256x256", repr(text)) from None
    if n <= 0 or k <= 0:
        raise _expected("NxK (out x in features) of positive integers", repr(text))
    return n, k


def _readable_file(text: str) -> str:
    """An existing file that this process can open for reading (opened once to be sure)."""
    path = Path(text)
    if not path.exists():
        raise _expected("an existing file", f"{text!r} (no such file)")
    if not path.is_file():
        raise _expected("a file", f"{text!r} (not a regular file)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _expected("a readable file", f"{text!r} ({exc.strerror or exc})") from None
    return text


def _npz_file(text: str) -> str:
    """A readable .npz archive (a zip file); what it holds is checked when it is loaded."""
    _readable_file(text)
    with open(text, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise _expected("an .npz file (weights, weight_scales, group_size[, in_features, bias])",
                        f"{text!r} (not a zip archive, as .npz files are)")
    return text


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in `folder`, or None when they can."""
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def _file_problem(path: Path) -> str | None:
    """Why `path` cannot be written as a file (its folder is not created), or None."""
    if path.is_dir():
        return f"{path} is a directory"
    why = _unwritable(path.parent)
    if why is None and path.exists() and not os.access(path, os.W_OK):
        why = f"{path} is not writable"
    return why


def _output_file(text: str) -> str:
    """A file path to write: not a directory, in an existing writable directory."""
    why = _file_problem(Path(text))
    if why:
        raise _expected("a file path in an existing writable directory", f"{text!r} ({why})")
    return text


def _output_stem(text: str) -> str:
    """A stem STEM for STEM.json and STEM.md, both writable."""
    if not os.path.basename(text):
        raise _expected("a path stem ending in a file name, e.g. bench/results/run", f"{text!r}")
    why = _file_problem(Path(text + ".json")) or _file_problem(Path(text + ".md"))
    if why:
        raise _expected("a path stem whose .json and .md can be written", f"{text!r} ({why})")
    return text


def _png_file(text: str) -> str:
    """A PNG path to write, with matplotlib installed to draw it (checked, not imported)."""
    _output_file(text)
    if importlib.util.find_spec("matplotlib") is None:
        raise _expected("matplotlib installed to draw the plot (pip install matplotlib)", f"{text!r}")
    return text


def _folder_problem(path: Path) -> str | None:
    """Why `path` cannot be made or filled as a folder (missing parents are created), or None."""
    if path.exists():
        return _unwritable(path)
    return _unwritable(next(p for p in path.absolute().parents if p.exists()))


def _output_dir(text: str) -> str:
    """A folder to create or fill: an existing writable folder, or one whose nearest existing
    parent is a writable folder."""
    why = _folder_problem(Path(text))
    if why:
        raise _expected("a folder that can be created or written", f"{text!r} ({why})")
    return text


# ---------------------------------------------------------------------------------------------
# Commands. Each returns an exit status; the values in `args` are already checked.
