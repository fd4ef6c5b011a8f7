"""Roofline plot of a benchmark result (matplotlib, optional): achieved TFLOP/s against
arithmetic intensity, under the read ceiling measured in the same run."""

from __future__ import annotations


def roofline(result: dict, path: str, *, fp32_peak_tflops: float | None = None) -> str:
    """Write a roofline PNG of `result` (as returned by q4gsw.bench.bench) to `path`.

    x: FLOP per byte moved (weights + scales + x + out); y: achieved TFLOP/s; the slanted
    roof is the read ceiling measured in the same run, the flat one an fp32 FLOP rate:
    `fp32_peak_tflops` if given, else the best cuBLAS fp32 rate among the run's yardsticks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    if fp32_peak_tflops is None:
        rates = [2 * y["m"] * y["n"] * y["k"] / y["cublas_fp32_us"] / 1e6
                 for y in result.get("yardsticks", []) if y.get("cublas_fp32_us")]
        fp32_peak_tflops = max(rates) if rates else None
    ceiling = result["ceiling_gb_per_s"] * 1e9
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    intensities = [2 * r["m"] * r["n"] * r["k"] / r["bytes"] for r in rows]
    lo, hi = min(intensities) / 2, max(intensities) * 2
    xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    roof = [ceiling * x / 1e12 for x in xs]
    if fp32_peak_tflops:
        roof = [min(v, fp32_peak_tflops) for v in roof]
        ax.axhline(fp32_peak_tflops, color="0.6", lw=0.8, ls=":",
                   label=f"fp32 rate {fp32_peak_tflops:.0f} TFLOP/s (cuBLAS, no TF32, same run)")
    ax.plot(xs, roof, color="k", lw=1.2, label=f"read ceiling {result['ceiling_gb_per_s']:.0f} GB/s (same run)")
    markers = {"decode_subgroup": "o", "decode_workgroup": "s", "tiled": "^", "general": "D", "rowwise": "x"}
    for kernel in dict.fromkeys(r["kernel"] for r in rows):
        pts = [(2 * r["m"] * r["n"] * r["k"] / r["bytes"], r["tflop_per_s"], r) for r in rows if r["kernel"] == kernel]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(kernel, "."), label=kernel, s=28)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte of weights + scales + x + out)")
    ax.set_ylabel("achieved TFLOP/s (GPU timestamps, median)")
    a = result["adapter"]
    ax.set_title(f"linear_q4gsw on {a['adapter_name']} ({a['backend']}), gs={result['group_size']}, "
                 f"{result['date'][:10]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
