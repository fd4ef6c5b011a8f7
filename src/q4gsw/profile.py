"""GPU-timestamp profiling of labelled dispatches: q4gsw.profile() and its table."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics

from .errors import ProfilerError
from .runtime import get_runtime
from .runtime.dispatch import Dispatch
from .runtime.submit import active_profiler, timed_passes


@dataclasses.dataclass(frozen=True)
class Record:
    label: str
    ns: float
    nbytes: int
    flops: int


class Profiler:
    """Collects one GPU time per dispatch run while it is active."""

    def __init__(self, runtime=None):
        self.runtime = runtime or get_runtime()
        if not self.runtime.caps.has_timestamps:
            raise ProfilerError(
                f"profiling needs the 'timestamp-query' feature, which the adapter "
                f"{self.runtime.caps.adapter_name!r} does not offer (or was disabled)"
            )
        self.records: list[Record] = []

    def run(self, dispatches: list[Dispatch]) -> None:
        """Run each dispatch as its own timed compute pass (one submit) and record the GPU times."""
        times = timed_passes(self.runtime, [[d] for d in dispatches], label="q4gsw/profile")
        for d, ns in zip(dispatches, times):
            self.records.append(Record(d.key.label, ns, d.nbytes, d.flops))

    def rows(self) -> list[dict]:
        """Per label: calls, mean and total µs, GB/s, % of the measured read bandwidth, TFLOP/s."""
        peak = self.runtime.read_bandwidth() if self.records else 0.0
        rows = []
        for label in dict.fromkeys(r.label for r in self.records):
            recs = [r for r in self.records if r.label == label]
            total_ns = sum(r.ns for r in recs)
            gbps = sum(r.nbytes for r in recs) / total_ns if total_ns else 0.0
            rows.append({
                "label": label,
                "calls": len(recs),
                "mean_us": total_ns / len(recs) / 1e3,
                "median_us": statistics.median(r.ns for r in recs) / 1e3,
                "total_us": total_ns / 1e3,
                "gb_per_s": gbps,
                "pct_of_peak": 100.0 * gbps * 1e9 / peak if peak else float("nan"),
                "tflop_per_s": sum(r.flops for r in recs) / total_ns / 1e3 if total_ns else 0.0,
            })
        return rows

    def table(self) -> str:
        """The rows as a fixed-width text table (peak = read bandwidth measured in this process)."""
        rows = self.rows()
        if not rows:
            return "(no dispatches recorded)"
        peak = self.runtime.read_bandwidth()
        head = f"{'label':<28} {'calls':>6} {'mean µs':>10} {'total µs':>11} {'GB/s':>8} {'% peak':>7} {'TFLOP/s':>8}"
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r['label']:<28} {r['calls']:>6} {r['mean_us']:>10.1f} {r['total_us']:>11.1f} "
                f"{r['gb_per_s']:>8.2f} {r['pct_of_peak']:>6.1f}% {r['tflop_per_s']:>8.3f}"
            )
        lines.append(f"peak = read bandwidth measured in this process: {peak / 1e9:.1f} GB/s "
                     f"({self.runtime.caps.adapter_name})")
        return "\n".join(lines)


@contextlib.contextmanager
def profile(runtime=None):
    """Record the GPU time of every dispatch run inside the block.

    Example:
        with q4gsw.profile() as prof:
            y = q4gsw.linear(x, pw)
        print(prof.table())
    Raises ProfilerError when the adapter lacks `timestamp-query`.
    """
    prof = Profiler(runtime)
    token = active_profiler.set(prof)
    try:
        yield prof
    finally:
        active_profiler.reset(token)

