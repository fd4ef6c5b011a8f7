"""The q4gsw command line: info, bench, tune, demo, export-web, quantize (thin argparse wrappers).

Every value is checked while the arguments are parsed, before a command does any work: a bad
one ends in a single line on stderr, `q4gsw <command>: argument <name>: expected ..., got ...`,
and exit status 2. Importing this module imports neither torch nor wgpu; each command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import ArgumentError, FormatError, Q4gswError
from .args import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, _budget, _folder_problem, _kernel_names, _layer_shape,
                   _non_negative_int, _npz_file, _output_dir, _output_file, _output_stem, _Parser, _png_file,
                   _positive_int, _readable_file, _Refused, _shapes)

def _info(args) -> int:
    from ..runtime import get_runtime
    from ..runtime.bandwidth import measure_read_bandwidth

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
    from ..tools.bench import bench, write_results

    result = bench(args.shapes, args.kernels, group_size=args.group_size, repeats=args.repeats,
                   yardsticks=args.yardsticks)
    if args.out:
        paths = write_results(result, args.out)
        print("wrote " + ", ".join(paths))
    if args.plot:
        from ..tools.plot import roofline

        print("wrote " + roofline(result, args.plot))
    return 0


def _demo(args) -> int:
    if args.decode and args.generate:
        raise _Refused("--generate", "either --decode or --generate", "both")
    if args.model == "minilm":
        if args.decode or args.generate:
            raise _Refused("--decode" if args.decode else "--generate",
                           "--model llama-shaped (decoding runs random Llama-shaped weights)", "--model minilm")
        from ..models.minilm import run_demo as run_minilm_demo

        try:
            run_minilm_demo(group_size=args.group_size, method=args.quantizer, dense_budget=args.dense_budget)
        except ModuleNotFoundError as exc:
            print(f"q4gsw demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    if args.generate:
        from ..demos.generate import run_demo as run_generate_demo

        run_generate_demo(tokens=args.tokens)
        return 0
    if args.decode:
        from ..demos.decode import run_decode_demo

        run_decode_demo(layers=args.layers, tokens=args.tokens, group_size=args.group_size)
        return 0
    from ..demos.layers import run_demo

    run_demo(layers=args.layers, group_size=args.group_size)
    return 0


#: export-web --model's value that names the packaged all-MiniLM-L6-v2 (not a path).
MINILM = "minilm"


def _export_web(args) -> int:
    import zipfile

    from ..web.export import export_web, load_npz_layer, random_layer

    chunk_bytes = args.chunk_mib << 20
    minilm = args.model == MINILM
    for name, value in (("--quantizer", args.quantizer), ("--dense-budget", args.dense_budget)):
        if value is not None and not minilm:
            raise _Refused(name, f"--model {MINILM} with it (the recipe of the MiniLM bundle)",
                           f"--model {args.model}" if args.model else "no --model")
    if args.model is not None:
        if args.weight or args.random:
            raise _Refused("--model", "no --weight or --random with it (a model bundle holds one model)",
                           "--weight" if args.weight else "--random")
        if minilm:
            from ..web.export_minilm import export_minilm_web

            budget = 1.5 if args.dense_budget is None else args.dense_budget
            path = export_minilm_web(args.out_dir, group_size=args.group_size, method=args.quantizer or "gptq",
                                     dense_budget=budget, chunk_bytes=chunk_bytes)
            print(f"wrote {path.parent}/ (all-MiniLM-L6-v2 sentence embeddings); serve it, e.g. python -m http.server "
                  f"-b 127.0.0.1 -d {path.parent}, and open embeddings.html")
            return 0
        from ..web.export_model import export_model_web

        path = export_model_web(args.out_dir, args.model, group_size=args.group_size, chunk_bytes=chunk_bytes,
                                progress=_progress())
        print(f"wrote {path.parent}/ (a model bundle); serve it, e.g. python -m http.server -b 127.0.0.1 "
              f"-d {path.parent}, and open generate.html")
        return 0

    layers = []
    for path in args.weight:  # the file is a readable zip (checked while parsing); now its contents
        try:
            layers.append(load_npz_layer(path))
        except (Q4gswError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
            reason = (f"{exc.argument}: expected {exc.expected}, got {exc.got}"
                      if isinstance(exc, ArgumentError) else str(exc))
            raise _Refused("--weight", "an .npz of weights, weight_scales, group_size[, in_features, bias]",
                           f"{path!r} ({reason})") from None
    for i, (n, k) in enumerate(args.random or ([] if layers else [(256, 256)])):
        name = f"random_{n}x{k}"
        name = name if name not in {layer.name for layer in layers} else f"{name}_{i}"
        layers.append(random_layer(name, n, k, group_size=args.group_size, bias=not args.no_bias,
                                   seed=args.seed + i))
    path = export_web(args.out_dir, layers, chunk_bytes=chunk_bytes)
    print(f"wrote {path.parent}/ ({', '.join(layer.name for layer in layers)}); serve it, e.g. "
          f"python -m http.server -b 127.0.0.1 -d {path.parent}, and open index.html")
    return 0


def _quantize(args) -> int:
    from ..io import quantize_file
    from ..io.convert import detect_format

    if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
        raise _Refused("OUT", "a file other than IN (IN is read while OUT is written)", repr(args.output))
    try:
        detect_format(args.input)
    except FormatError as exc:
        raise _Refused("IN", "a safetensors or GGUF file", exc.got) from None
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
    from ..runtime.tuning_cache import cache_dir

    folder = cache_dir()  # written after every shape is timed: checked first
    why = _folder_problem(folder)
    if why:
        raise _Refused("Q4GSW_CACHE_DIR (environment)", "a folder that can be created or written",
                       f"{str(folder)!r} ({why})")
    from ..tools.tune import tune

    tune(args.shapes, group_size=args.group_size, repeats=args.repeats, activations=args.activations)
    return 0


# ---------------------------------------------------------------------------------------------
# The parser and main.


def build_parser() -> argparse.ArgumentParser:
    """The `q4gsw` parser; each subcommand sets `func`, the command to run with the parsed args."""
    parser = _Parser(prog="q4gsw", epilog="q4gsw COMMAND --help lists the options of a command.",
                     description="ExecuTorch's 4-bit linear (linear_q4gsw) on WebGPU: inspect the adapter, "
                                 "benchmark and tune the kernels, run demos, export a browser bundle, "
                                 "quantize checkpoints.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("info", help="adapter, backend, features, limits, measured read bandwidth",
                   description="The adapter q4gsw picks, its features and limits, and its measured read "
                               "bandwidth.").set_defaults(func=_info)

    b = sub.add_parser("bench", help="time every kernel per shape: µs, GB/s, %% of the read ceiling, error",
                       description="Time every kernel per shape: µs, GB/s, % of the read ceiling, error.")
    b.add_argument("--shapes", type=_shapes, default="small",
                   help="a preset (small, llama) or MxKxN[,MxKxN...] (default: %(default)s)")
    b.add_argument("--kernels", type=_kernel_names, default=None,
                   help="comma-separated kernel names (default: all)")
    b.add_argument("--group-size", type=_positive_int, default=128,
                   help="elements of K per scale (default: %(default)s)")
    b.add_argument("--repeats", type=_positive_int, default=30,
                   help="timed runs per kernel and shape; the median is reported (default: %(default)s)")
    b.add_argument("--yardsticks", action="store_true",
                   help="also time a dense fp32 WGSL GEMV and (torch with CUDA) tinygemm int4 and cuBLAS fp16")
    b.add_argument("--plot", type=_png_file, default=None, metavar="PNG",
                   help="write a roofline plot to PNG; needs matplotlib (default: no plot)")
    b.add_argument("--out", type=_output_stem, default=None,
                   help="write OUT.json and OUT.md, e.g. bench/results/<date>-<card> (default: not written)")
    b.set_defaults(func=_bench)

    t = sub.add_parser("tune", help="time kernel configurations per shape and cache the fastest for this adapter",
                       description="Time kernel configurations per shape and cache the fastest for this "
                                   "adapter (in $Q4GSW_CACHE_DIR, default ~/.cache/q4gsw).")
    t.add_argument("--shapes", type=_shapes, default="small",
                   help="a preset (small, llama) or MxKxN[,MxKxN...] (default: %(default)s)")
    t.add_argument("--group-size", type=_positive_int, default=128,
                   help="elements of K per scale (default: %(default)s)")
    t.add_argument("--repeats", type=_positive_int, default=20,
                   help="timed runs per configuration; the median is compared (default: %(default)s)")
    t.add_argument("--activations", choices=("f32", "int8"), default="f32",
                   help="tune the kernels of f32 or of int8 activations (activations='int8': cached apart) "
                        "(default: %(default)s)")
    t.set_defaults(func=_tune)

    d = sub.add_parser("demo", help="a Llama-shaped stack of quantized layers: accuracy and profile",
                       description="A Llama-shaped stack of quantized layers (accuracy and profile), "
                                   "greedy decoding through it (--decode), or a real model (--model minilm).")
    d.add_argument("--layers", type=_positive_int, default=2,
                   help="Llama-shaped blocks (default: %(default)s)")
    d.add_argument("--group-size", type=_positive_int, default=128,
                   help="elements of K per scale (default: %(default)s)")
    d.add_argument("--model", choices=("llama-shaped", "minilm"), default="llama-shaped",
                   help="llama-shaped: random Llama-shaped layers; minilm: all-MiniLM-L6-v2 "
                        "sentence embeddings, q4gsw vs fp32 (needs the 'model' extra) (default: %(default)s)")
    d.add_argument("--quantizer", choices=("gptq", "rtn"), default="gptq",
                   help="--model minilm: gptq (calibrated: searched scales, GPTQ, bias correction) "
                        "or rtn (round to nearest, torchao's scales) (default: %(default)s)")
    d.add_argument("--dense-budget", type=_budget, default=1.5,
                   help="--model minilm: keep the linears with the largest measured sensitivity dense (fp16) while "
                        "the linear weights take at most this many times their all-int4 bytes; 1 keeps none "
                        "(default: %(default)s)")
    d.add_argument("--decode", action="store_true",
                   help="greedy decoding through random weights, one chained submit per token: tokens/s")
    d.add_argument("--generate", action="store_true",
                   help="write a small random Llama checkpoint, load it with q4gsw.load_model and stream a "
                        "greedy continuation (tokens/s)")
    d.add_argument("--tokens", type=_positive_int, default=32,
                   help="tokens to decode with --decode or --generate (default: %(default)s)")
    d.set_defaults(func=_demo)

    w = sub.add_parser("export-web", help="write a static browser bundle: kernels, packed weights, q4gsw.js, demo page",
                       description="Write a static browser bundle: kernels, packed weights, q4gsw.js and a "
                                   "demo page.")
    w.add_argument("out_dir", metavar="OUT_DIR", type=_output_dir,
                   help="the bundle folder (created; an earlier bundle's files are overwritten)")
    w.add_argument("--weight", action="append", type=_npz_file, default=[], metavar="FILE.npz",
                   help="a layer: weights, weight_scales, group_size[, in_features, bias] (repeatable; "
                        "default: none)")
    w.add_argument("--random", action="append", type=_layer_shape, metavar="NxK",
                   help="a random quantized layer, N out x K in features (repeatable; default: 256x256 "
                        "without --weight, none with it)")
    w.add_argument("--model", metavar="PATH", default=None,
                   help="a whole model instead of layers: anything q4gsw.load_model reads (a Hugging Face or q4gsw "
                        "model directory, a GGUF file), run by generate.html; or 'minilm': the packaged "
                        "all-MiniLM-L6-v2 (the 'model' extra), run by embeddings.html (a folder named minilm: "
                        "./minilm) (default: none)")
    w.add_argument("--quantizer", choices=("gptq", "rtn"), default=None,
                   help="--model minilm: gptq (calibrated) or rtn (round to nearest), as q4gsw demo --model minilm "
                        "(default: gptq)")
    w.add_argument("--dense-budget", type=_budget, default=None,
                   help="--model minilm: keep the most sensitive linears dense (fp16) within this many times the "
                        "all-int4 weight bytes; 1 keeps none, as q4gsw demo --model minilm (default: 1.5)")
    w.add_argument("--chunk-mib", type=_positive_int, default=128,
                   help="largest data file and weight chunk, in MiB: weights are split along N to fit; the device "
                        "must bind this much (WebGPU's default limit: 128) (default: %(default)s)")
    w.add_argument("--group-size", type=_positive_int, default=128,
                   help="group size of --random layers and of --model's float linears (default: %(default)s)")
    w.add_argument("--no-bias", action="store_true", help="--random layers without bias")
    w.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the first --random layer; the i-th uses seed + i (default: %(default)s)")
    w.set_defaults(func=_export_web)

    q = sub.add_parser("quantize", help="a safetensors or GGUF checkpoint to a q4gsw safetensors file",
                       description="Quantize a safetensors or GGUF checkpoint into a q4gsw safetensors file.")
    q.add_argument("input", metavar="IN", type=_readable_file,
                   help="safetensors (2-D float *weight tensors are quantized) or GGUF "
                        "(Q4_0 tensors imported losslessly, 2-D float *weight tensors quantized)")
    q.add_argument("output", metavar="OUT", type=_output_file,
                   help="the q4gsw safetensors file to write (its folder must exist)")
    q.add_argument("--group-size", type=_positive_int, default=128,
                   help="group size for quantized float tensors (default: %(default)s)")
    q.set_defaults(func=_quantize)

    from .generate import add_bench_parser, add_parser as add_generate

    add_generate(sub)
    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run `q4gsw` with argv (default: sys.argv[1:]); returns the exit status.

    0: done; 2: a refused value or a q4gsw error, one line on stderr; 1: an OS error while
    running (one line); 130: interrupted (Ctrl-C).
    """
    prog = "q4gsw"
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help (0) or a refused value (2, its line already printed)
            return exc.code
        prog = f"q4gsw {args.command}"
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        try:
            return args.func(args)
        except (_Refused, Q4gswError, ValueError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
