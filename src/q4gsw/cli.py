"""The q4gsw command line: info, bench, demo (thin argparse wrappers)."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import Q4gswError


def _info(args) -> int:
    from .runtime import get_runtime
    from .runtime.bandwidth import measure_read_bandwidth

    rt = get_runtime()
    c = rt.caps
    print(f"adapter:   {c.adapter_name}")
    print(f"type:      {c.adapter_type}, backend {c.backend}, vendor {c.vendor}")
    print(f"driver:    {c.driver}")
    print(f"chosen:    {c.chosen_because}")
    print(f"features:  {', '.join(sorted(c.features)) or '(none of timestamp-query, shader-f16, subgroup)'}")
    print("limits:")
    for name in ("max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroup-storage-size",
                 "max-compute-invocations-per-workgroup", "max-compute-workgroups-per-dimension"):
        print(f"  {name:<40} {c.limits.get(name)}")
    if c.has_loop_limit:
        print("warning:   this llvmpipe cuts loops past 65 535 iterations per invocation (Mesa < 25)")
    bw = measure_read_bandwidth(rt)
    print(f"read bandwidth (measured): {bw.bytes_per_second / 1e9:.1f} GB/s over {bw.nbytes >> 20} MiB")
    print("all adapters (Q4GSW_ADAPTER=<index|cpu|gpu|name> picks one):")
    for i, a in enumerate(rt.wgpu.gpu.enumerate_adapters_sync()):
        print(f"  {i}: {a.info['device']} ({a.info['adapter_type']}, {a.info['backend_type']})")
    return 0


def _bench(args) -> int:
    from .bench import bench, parse_shapes, write_results

    result = bench(parse_shapes(args.shapes), args.kernels.split(",") if args.kernels else None,
                   group_size=args.group_size, repeats=args.repeats, yardsticks=args.yardsticks)
    if args.out:
        stem = args.out
        paths = write_results(result, stem)
        print("wrote " + ", ".join(paths))
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(layers=args.layers, group_size=args.group_size)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="q4gsw", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="adapter, backend, features, limits, measured read bandwidth").set_defaults(func=_info)
    b = sub.add_parser("bench", help="time every kernel per shape: µs, GB/s, %% of the read ceiling, error")
    b.add_argument("--shapes", default="small", help="preset (small, llama) or MxKxN[,MxKxN...] (default: small)")
    b.add_argument("--kernels", default=None, help="comma-separated kernel names (default: all)")
    b.add_argument("--group-size", type=int, default=128)
    b.add_argument("--repeats", type=int, default=30)
    b.add_argument("--yardsticks", action="store_true",
                   help="also time a dense fp32 WGSL GEMV and (torch with CUDA) tinygemm int4 and cuBLAS fp16")
    b.add_argument("--out", default=None, help="write OUT.json and OUT.md (e.g. bench/results/<date>-<card>)")
    b.set_defaults(func=_bench)
    d = sub.add_parser("demo", help="a Llama-shaped stack of quantized layers: accuracy and profile")
    d.add_argument("--layers", type=int, default=2)
    d.add_argument("--group-size", type=int, default=128)
    d.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (Q4gswError, ValueError) as exc:
        print(f"q4gsw {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
