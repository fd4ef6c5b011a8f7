"""Save and load PackedWeights as a safetensors file, with versioned q4gsw metadata in its header."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ..checks import describe, existing_file
from ..errors import ArgumentError, FormatError
from ..format import PackedWeight
from ._deps import require

#: The format version this q4gsw writes, and the newest it reads.
FORMAT_VERSION = 1
#: Header keys q4gsw owns; user metadata may not use the prefix.
KEY_FORMAT, KEY_VERSION, KEY_TENSORS = "q4gsw.format", "q4gsw.format_version", "q4gsw.tensors"
_PREFIX = "q4gsw."


def save(path: str | os.PathLike, weights: dict[str, PackedWeight], metadata: dict[str, str] | None = None) -> None:
    """Write PackedWeights to a safetensors file.

    Each weight NAME is stored as two tensors, `NAME.qweight` ((N, ceil(K/2)) uint8, as
    given) and `NAME.scales` ((num_groups, padded_N) float32, as given). The header's
    metadata holds the format ("q4gsw"), its version, and per weight its group size, K, N
    and the two tensor keys, as JSON under "q4gsw.tensors"; everything q4gsw needs is in the
    header, nothing in the file name. The file is written to a temporary name and renamed,
    so a failed save leaves no partial file.

    Args:
        path: the file to write (by convention *.safetensors).
        weights: {name: PackedWeight}, at least one.
        metadata: optional str -> str pairs stored in the header (e.g. {"source": ...});
            keys may not start with "q4gsw.".
    """
    fn = "save"
    if not isinstance(path, (str, os.PathLike)):
        raise FormatError(fn, "path", "a path (str or os.PathLike)", describe(path))
    if not isinstance(weights, dict) or not weights:
        raise ArgumentError(fn, "weights", "a non-empty dict of name -> PackedWeight", describe(weights))
    if metadata is not None and not isinstance(metadata, dict):
        raise ArgumentError(fn, "metadata", "None or a dict of str -> str", describe(metadata))
    header = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ArgumentError(fn, "metadata", "str -> str pairs", f"{key!r}: {describe(value)}")
        if key.startswith(_PREFIX):
            raise ArgumentError(fn, "metadata", f"keys not starting with {_PREFIX!r} (q4gsw's own)", repr(key))
        header[key] = value
    tensors, index = {}, {}
    for name, pw in weights.items():
        if not isinstance(name, str) or not name:
            raise ArgumentError(fn, "weights", "non-empty str names", repr(name))
        if not isinstance(pw, PackedWeight):
            raise ArgumentError(fn, "weights", f"PackedWeight values ({name!r})", describe(pw))
        wkey, skey = f"{name}.qweight", f"{name}.scales"
        if wkey in tensors or skey in tensors:
            raise ArgumentError(fn, "weights", "names whose tensor keys do not collide", repr(name))
        tensors[wkey] = np.ascontiguousarray(pw.weights)
        tensors[skey] = np.ascontiguousarray(pw.scales)
        index[name] = {"weights": wkey, "scales": skey, "group_size": pw.group_size,
                       "in_features": pw.in_features, "out_features": pw.out_features}
    header.update({KEY_FORMAT: "q4gsw", KEY_VERSION: str(FORMAT_VERSION), KEY_TENSORS: json.dumps(index)})
    st_numpy = require("safetensors.numpy", fn)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".q4gsw-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        st_numpy.save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a q4gsw file (user keys and q4gsw's), after checking that it
    is a q4gsw file of a version this q4gsw reads."""
    return _check_header("read_header", path, _metadata("read_header", path))


def load(path: str | os.PathLike) -> dict[str, PackedWeight]:
    """Read a file written by save.

    Args:
        path: a q4gsw safetensors file.
    Returns:
        {name: PackedWeight}, in the order they were saved.
    Raises:
        FormatError: not a safetensors file, a safetensors file without q4gsw's header, a
            newer format version than this q4gsw reads, or an index that disagrees with
            the tensors.
    """
    fn = "load"
    header = _check_header(fn, path, _metadata(fn, path))
    try:
        index = json.loads(header[KEY_TENSORS])
    except (KeyError, json.JSONDecodeError) as exc:
        raise FormatError(fn, "path", f"a JSON {KEY_TENSORS!r} header entry", f"{exc}") from exc
    safetensors = require("safetensors", fn)
    out = {}
    with safetensors.safe_open(os.fspath(path), framework="np") as f:
        keys = set(f.keys())
        for name, entry in index.items():
            try:
                wkey, skey = entry["weights"], entry["scales"]
                gs, k, n = int(entry["group_size"]), int(entry["in_features"]), int(entry["out_features"])
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(fn, "path", f"a complete index entry for {name!r}", repr(entry)) from exc
            if wkey not in keys or skey not in keys:
                raise FormatError(fn, "path", f"tensors {wkey!r} and {skey!r}", "missing from the file")
            pw = PackedWeight(f.get_tensor(wkey), f.get_tensor(skey), gs, in_features=k)
            if pw.out_features != n:
                raise FormatError(fn, "path", f"N = {n} rows in {wkey!r} (header)", str(pw.out_features))
            out[name] = pw
    return out


def _metadata(function: str, path) -> dict[str, str]:
    """The safetensors header metadata of path ({} when it has none)."""
    path = existing_file(function, "path", path)
    safetensors = require("safetensors", function)
    try:
        with safetensors.safe_open(os.fspath(path), framework="np") as f:
            return dict(f.metadata() or {})
    except (safetensors.SafetensorError, OSError) as exc:
        raise FormatError(function, "path", "a safetensors file", f"{os.fspath(path)!r} ({exc})") from exc


def _check_header(function: str, path, header: dict[str, str]) -> dict[str, str]:
    if header.get(KEY_FORMAT) != "q4gsw":
        raise FormatError(function, "path", f"a q4gsw file (header {KEY_FORMAT!r} = 'q4gsw')",
                          f"{os.fspath(path)!r} without it (a plain safetensors file?)")
    version = header.get(KEY_VERSION, "")
    if not version.isdigit():
        raise FormatError(function, "path", f"an integer {KEY_VERSION!r}", repr(version))
    if int(version) > FORMAT_VERSION:
        raise FormatError(function, "path", f"format version <= {FORMAT_VERSION} (this q4gsw)",
                          f"version {version}: written by a newer q4gsw; upgrade q4gsw to read it")
    return header
