"""ClockLog: the SM clock during a probe (nvidia-smi every 100 ms into a CSV), shared by the probes
in this folder. An H200 left idle between submits runs its SMs at 345-1320 MHz
(docs/kernels-decode.md, session 5): every timed row carries the clock it ran at."""

from __future__ import annotations

import datetime
import os
import shutil
import statistics
import subprocess


class ClockLog:
    """nvidia-smi sampling clocks, power, temperature and utilization every 100 ms into a CSV
    (when nvidia-smi exists); clock(spans): the median SM clock (MHz) within wall-time spans."""

    FIELDS = "timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu"

    def __init__(self, path: str):
        self.path, self.proc = path, None
        if shutil.which("nvidia-smi"):
            self.file = open(path, "w")
            self.proc = subprocess.Popen(["nvidia-smi", f"--query-gpu={self.FIELDS}", "--format=csv,noheader,nounits",
                                          "-lms", "100"], stdout=self.file, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.file.close()

    def __enter__(self) -> "ClockLog":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()  # however the probe ends

    def samples(self) -> list[tuple[float, float]]:
        """(wall time, SM MHz) of every sample so far."""
        if self.proc is None or not os.path.exists(self.path):
            return []
        out = []
        for line in open(self.path):
            parts = [p.strip() for p in line.split(",")]
            try:
                out.append((datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp(), float(parts[1])))
            except (ValueError, IndexError):
                continue
        return out

    def clock(self, spans) -> float | None:
        """Median SM MHz over the samples within any of the (t0, t1) wall spans (the nearest
        sample for spans shorter than the sampling period), or None without nvidia-smi."""
        samples = self.samples()
        if not samples:
            return None
        values = [mhz for t, mhz in samples if any(t0 <= t <= t1 for t0, t1 in spans)]
        if not values:
            for t0, t1 in spans:
                mid = (t0 + t1) / 2
                t, mhz = min(samples, key=lambda s: abs(s[0] - mid))
                if abs(t - mid) < 0.5:
                    values.append(mhz)
        return statistics.median(values) if values else None
