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
    print(f"subgroups: {c.subgroup_min_size} invocations (probed; the adapter's minimum without the subgroup feature)")
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
    from .tools.bench import bench, write_results
    from .tools.workload import parse_shapes

    result = bench(parse_shapes(args.shapes), args.kernels.split(",") if args.kernels else None,
                   group_size=args.group_size, repeats=args.repeats, yardsticks=args.yardsticks)
    if args.out:
        stem = args.out
        paths = write_results(result, stem)
        print("wrote " + ", ".join(paths))
    if args.plot:
        from .tools.plot import roofline

        print("wrote " + roofline(result, args.plot))
    return 0


def _demo(args) -> int:
    if args.model == "minilm":
        from .models.minilm import run_demo as run_minilm_demo

        try:
            run_minilm_demo(group_size=args.group_size, method=args.quantizer)
        except ModuleNotFoundError as exc:
            print(f"q4gsw demo: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.decode:
        from .demos.decode import run_decode_demo

        run_decode_demo(layers=args.layers, tokens=args.tokens, group_size=args.group_size)
        return 0
    from .demos.layers import run_demo

    run_demo(layers=args.layers, group_size=args.group_size)
    return 0


def _export_web(args) -> int:
    from .web.export import export_web, load_npz_layer, random_layer

    layers = [load_npz_layer(path) for path in args.weight]
    for i, spec in enumerate(args.random or ([] if layers else ["256x256"])):
        n, _, k = spec.lower().partition("x")
        name = f"random_{int(n)}x{int(k)}"
        name = name if name not in {layer.name for layer in layers} else f"{name}_{i}"
        layers.append(random_layer(name, int(n), int(k), group_size=args.group_size, bias=not args.no_bias,
                                   seed=args.seed + i))
    path = export_web(args.out_dir, layers)
    print(f"wrote {path.parent}/ ({', '.join(layer.name for layer in layers)}); serve it, e.g. "
          f"python -m http.server -b 127.0.0.1 -d {path.parent}, and open index.html")
    return 0


def _quantize(args) -> int:
    from .io import quantize_file

    report = quantize_file(args.input, args.output, group_size=args.group_size, progress=_progress())
    print(f"wrote {args.output}: {report.count('quantized')} quantized, "
          f"{report.count('imported')} imported losslessly (Q4_0), {report.count('skipped')} skipped")
    reasons = {}
    for t in report.tensors:
        if t.action == "skipped":
            reasons.setdefault(t.detail.split(":", 1)[-1].strip(), []).append(t.name)
    for reason, names in reasons.items():
        print(f"  skipped {len(names)} ({reason}): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
    return 0


def _progress():
    """tqdm when installed, else one plain line per tensor on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        def plain(items, total):
            for i, item in enumerate(items, 1):
                print(f"[{i}/{total}] {getattr(item, 'name', item)}", file=sys.stderr, flush=True)
                yield item
        return plain
    return lambda items, total: tqdm(items, total=total, unit="tensor", file=sys.stderr)


def _tune(args) -> int:
    from .tools.workload import parse_shapes
    from .tools.tune import tune

    tune(parse_shapes(args.shapes), group_size=args.group_size, repeats=args.repeats)
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
    b.add_argument("--plot", default=None, metavar="PNG", help="write a roofline plot (needs matplotlib)")
    b.add_argument("--out", default=None, help="write OUT.json and OUT.md (e.g. bench/results/<date>-<card>)")
    b.set_defaults(func=_bench)
    t = sub.add_parser("tune", help="time kernel configurations per shape and cache the fastest for this adapter")
    t.add_argument("--shapes", default="small", help="preset (small, llama) or MxKxN[,MxKxN...]")
    t.add_argument("--group-size", type=int, default=128)
    t.add_argument("--repeats", type=int, default=20)
    t.set_defaults(func=_tune)
    d = sub.add_parser("demo", help="a Llama-shaped stack of quantized layers: accuracy and profile")
    d.add_argument("--layers", type=int, default=2)
    d.add_argument("--group-size", type=int, default=128)
    d.add_argument("--model", choices=("llama-shaped", "minilm"), default="llama-shaped",
                   help="llama-shaped: random Llama-shaped layers (default); minilm: all-MiniLM-L6-v2 "
                        "sentence embeddings, q4gsw vs fp32 (needs the 'model' extra)")
    d.add_argument("--quantizer", choices=("gptq", "rtn"), default="gptq",
                   help="--model minilm: gptq (calibrated: searched scales, GPTQ, bias correction; "
                        "default) or rtn (round to nearest, torchao's scales)")
    d.add_argument("--decode", action="store_true",
                   help="greedy decoding through random weights, one chained submit per token: tokens/s")
    d.add_argument("--tokens", type=int, default=32, help="tokens to decode with --decode (default: 32)")
    d.set_defaults(func=_demo)
    w = sub.add_parser("export-web", help="write a static browser bundle: kernels, packed weights, q4gsw.js, demo page")
    w.add_argument("out_dir", metavar="OUT_DIR")
    w.add_argument("--weight", action="append", default=[], metavar="FILE.npz",
                   help="a layer: weights, weight_scales, group_size[, in_features, bias] (repeatable)")
    w.add_argument("--random", action="append", metavar="NxK",
                   help="a random quantized layer, N out x K in features (repeatable; default 256x256 without --weight)")
    w.add_argument("--group-size", type=int, default=128, help="group size of --random layers")
    w.add_argument("--no-bias", action="store_true", help="--random layers without bias")
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=_export_web)
    q = sub.add_parser("quantize", help="a safetensors or GGUF checkpoint to a q4gsw safetensors file")
    q.add_argument("input", metavar="IN", help="safetensors (2-D float *weight tensors are quantized) or GGUF "
                   "(Q4_0 tensors imported losslessly, 2-D float *weight tensors quantized)")
    q.add_argument("output", metavar="OUT", help="the q4gsw safetensors file to write")
    q.add_argument("--group-size", type=int, default=128, help="group size for quantized float tensors (default 128)")
    q.set_defaults(func=_quantize)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (Q4gswError, ValueError) as exc:
        print(f"q4gsw {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
