"""`q4gsw generate`: its options and the command."""

from __future__ import annotations

import argparse
import os

from .args import _non_negative_int, _positive_int, _Refused


def _ids(text: str) -> list[int]:
    from ..demos.generate import parse_ids

    try:
        return parse_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a float >= 0 (0: greedy), got {text!r}")
    return value


def _top_p(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a float in (0, 1], got {text!r}")
    return value


def add_parser(sub) -> None:
    from ..llm.config import PRESETS

    g = sub.add_parser("generate", help="run a Llama/Qwen2/Mistral checkpoint on the GPU: tokens stream, then tokens/s",
                       description="Load a checkpoint (Hugging Face directory, q4gsw model directory or GGUF "
                                   "Q4_0 file), prefill the prompt in one submit and generate token by token, "
                                   "printing tokens as they come and the prefill and decode tokens/s.")
    g.add_argument("path", nargs="?", metavar="PATH", help="the checkpoint (omit with --random)")
    g.add_argument("--random", choices=sorted(PRESETS), default=None,
                   help="random weights of this model's shape instead of PATH, for benchmarking (default: off)")
    g.add_argument("--prompt", default=None, help="prompt text (needs the checkpoint's tokenizer.json; default: none, give --ids)")
    g.add_argument("--ids", type=_ids, default=None, help="prompt token ids, e.g. 1,2,3 (default: none, give --prompt)")
    g.add_argument("--prompt-tokens", type=_positive_int, default=16,
                   help="with --random and no --ids: a random prompt of this many tokens (default: %(default)s)")
    g.add_argument("--max-new-tokens", type=_positive_int, default=64, help="tokens to generate (default: %(default)s)")
    g.add_argument("--temperature", type=_temperature, default=0.0, help="0: greedy (default: %(default)s)")
    g.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k most likely (default: off)")
    g.add_argument("--top-p", type=_top_p, default=None, help="sample in the top-p probability mass (default: off)")
    g.add_argument("--seed", type=_non_negative_int, default=None, help="sampling seed (default: random)")
    g.add_argument("--group-size", type=_positive_int, default=128,
                   help="group size of weights quantized at load (default: %(default)s)")
    g.add_argument("--max-positions", type=_positive_int, default=None,
                   help="KV-cache positions (default: min(4096, the model's context))")
    _add_kv_cache(g)
    _add_activations(g)
    g.set_defaults(func=run)


def _add_kv_cache(parser) -> None:
    parser.add_argument("--kv-cache", choices=("f32", "f16"), default="f32",
                        help="KV-cache storage: f16 halves its memory and the attention's reads; needs the "
                             "adapter's shader-f16 (default: %(default)s)")


def _add_activations(parser) -> None:
    parser.add_argument("--prefill-activations", choices=("f32", "int8"), default="f32",
                        help="int8: prompts of 16 tokens or more run their linears with x quantized to int8 on the "
                             "GPU (~2x the prefill speed, ~6e-3 relative error a linear) (default: %(default)s)")
    parser.add_argument("--decode-activations", choices=("f32", "int8"), default="f32",
                        help="int8: decode steps run their linears with x quantized to int8 per 32 k inside the "
                             "kernel (faster decode, ~5e-3 relative error a linear) (default: %(default)s)")


def run(args) -> int:
    from ..demos.generate import open_model, random_prompt, stream

    if (args.path is None) == (args.random is None):
        raise _Refused("PATH", "a checkpoint path or --random PRESET (one of them)",
                       "both" if args.path else "neither")
    if args.path is not None and not os.path.exists(args.path):
        raise _Refused("PATH", "an existing checkpoint directory or GGUF file", repr(args.path))
    if args.prompt is not None and args.ids is not None:
        raise _Refused("--prompt", "either --prompt or --ids", "both")
    if args.random is not None and args.prompt is not None:
        raise _Refused("--prompt", "--ids with --random (random weights have no tokenizer)", repr(args.prompt))
    if args.temperature == 0 and (args.top_k or args.top_p or args.seed is not None):
        raise _Refused("--temperature", "> 0 with --top-k, --top-p or --seed (0 is greedy)", "0")
    model = open_model(args.path, args.random, group_size=args.group_size, max_positions=args.max_positions,
                       kv_cache=args.kv_cache, prefill_activations=args.prefill_activations,
                       decode_activations=args.decode_activations)
    if args.ids is not None:
        ids = args.ids
    elif args.prompt is not None:
        ids = model.encode(args.prompt)
    elif args.random is not None:
        ids = random_prompt(model, args.prompt_tokens)
    else:
        raise _Refused("--prompt", "--prompt TEXT or --ids 1,2,3", "neither")
    sampling = {}
    if args.temperature > 0:
        sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.prompt is not None:
        print(args.prompt, end="", flush=True)
    stream(model, ids, args.max_new_tokens, **sampling)
    return 0


def _presets(text: str) -> list[str]:
    from ..llm.config import PRESETS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated presets from {', '.join(sorted(PRESETS))}, "
                                         f"got {text!r}")
    return names


def _contexts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive prompt lengths, e.g. 128,1024, got {text!r}")
    return values


def add_bench_parser(sub) -> None:
    b = sub.add_parser("bench-llm", help="decode and prefill tokens/s of random-weight models of real shapes",
                       description="Whole-model speed of random weights of real models' shapes: decode tokens/s "
                                   "by context, prefill tokens/s, GPU/host/wall time a token, by dispatch label, "
                                   "against the weight-bytes floor and (torch with CUDA) a torch int4 yardstick.")
    b.add_argument("--presets", type=_presets, default="llama-3.2-1b",
                   help="comma-separated model shapes (default: %(default)s)")
    b.add_argument("--contexts", type=_contexts, default="128,1024,4096",
                   help="prompt lengths before the timed decode (default: %(default)s)")
    b.add_argument("--new-tokens", type=_positive_int, default=64, help="decode tokens timed (default: %(default)s)")
    b.add_argument("--prefill-tokens", type=_positive_int, default=512, help="prefill prompt (default: %(default)s)")
    b.add_argument("--no-yardstick", action="store_true", help="skip the torch int4 yardstick")
    b.add_argument("--out", default=None, help="write OUT.json and OUT.md (default: not written)")
    _add_kv_cache(b)
    b.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from ..tools.bench_llm import bench_llm, write_results

    result = bench_llm(args.presets, contexts=args.contexts, new_tokens=args.new_tokens,
                       prefill_tokens=args.prefill_tokens, yardstick=not args.no_yardstick, kv_cache=args.kv_cache)
    if args.out:
        print("wrote " + ", ".join(write_results(result, args.out)))
    return 0
