"""What an importer did with each tensor of its input: ConvertedTensor, and Imported, the
{name: PackedWeight} result that also lists what was left out (and says so in the log)."""

from __future__ import annotations

import dataclasses
import logging

log = logging.getLogger("q4gsw")


@dataclasses.dataclass
class ConvertedTensor:
    """What an importer (or quantize_file) did with one tensor of the input."""

    name: str
    action: str  # "quantized", "imported" (lossless repack) or "skipped"
    detail: str  # shape/dtype, or why it was skipped


class Imported(dict):
    """{name: PackedWeight} as an importer returns it, in file order, with `skipped`: a
    ConvertedTensor(name, "skipped", reason) for every tensor of the input it left out."""

    def __init__(self, items=(), skipped=()):
        super().__init__(items)
        self.skipped: list[ConvertedTensor] = list(skipped)


def note_skipped(function: str, source: str, result: Imported, total: int) -> Imported:
    """Log one warning naming what `function` left out of `source` (the first few, with their
    reasons), so that nothing is dropped silently; returns result."""
    if result.skipped:
        shown = "; ".join(f"{s.name} ({s.detail})" for s in result.skipped[:3])
        more = f"; and {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
        log.warning("q4gsw %s: imported %d of %d tensors of %s, skipped %d: %s%s (the result's .skipped "
                    "lists each with its reason)", function, len(result), total, source, len(result.skipped),
                    shown, more)
    return result
