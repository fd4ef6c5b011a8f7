"""The autotuning cache: where `q4gsw tune` stores its winners and how the op finds them.

One JSON file per (adapter, driver, backend, wgpu version) under $Q4GSW_CACHE_DIR (default
~/.cache/q4gsw). Q4GSW_TUNE=0 makes the runtime ignore it (Runtime.tuned).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("q4gsw")
FORMAT_VERSION = 2  # 2: decode settings say features_per_workgroup, tiled_split x_rows_per_tile


def cache_dir() -> Path:
    return Path(os.environ.get("Q4GSW_CACHE_DIR") or Path.home() / ".cache" / "q4gsw")


def identity(caps) -> dict:
    """What a tuning result is valid for."""
    import wgpu

    return {"adapter": caps.adapter_name, "driver": caps.driver, "backend": caps.backend,
            "wgpu": wgpu.__version__}


def cache_path(caps) -> Path:
    ident = identity(caps)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"tune-{digest}.json"


def read_cache(caps) -> dict:
    """{bucket: {"kernel", "settings", ...}} for this adapter, or {} (missing, stale, corrupt)."""
    path = cache_path(caps)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("q4gsw: ignoring unreadable tuning cache %s (%s)", path, exc)
        return {}
    if data.get("format") != FORMAT_VERSION or data.get("identity") != identity(caps):
        log.warning("q4gsw: ignoring tuning cache %s made for another adapter/driver/version", path)
        return {}
    return data.get("entries", {})


def write_cache(caps, entries: dict) -> Path:
    """Merge entries into this adapter's cache file; returns its path."""
    path = cache_path(caps)
    merged = {**read_cache(caps), **entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": FORMAT_VERSION, "identity": identity(caps), "entries": merged}, indent=1))
    tmp.replace(path)
    return path
