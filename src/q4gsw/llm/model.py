"""CausalLM: a decoder held on the GPU, its steps recorded once as Chains and replayed one
submit a token, the next token chosen on the GPU (q4gsw.load_model returns one)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from ..arith import ceil_div
from ..chain import Chain, GpuTensor, upload
from ..checks import describe
from ..errors import ArgumentError, DTypeError, ShapeError, UnsupportedShapeError
from ..format import DenseWeight, PackedWeight
from ..runtime import get_runtime
from . import ops
from .sampling import Sampling, sampling
from .stream import TokenStream
from .weights import DecoderWeights

#: Positions the KV cache holds unless asked otherwise (and never past the model's context).
DEFAULT_MAX_POSITIONS = 4096
#: Keys per attention split in the decode step (one tile of attention.wgsl).
DECODE_SPLIT_KEYS = ops.ATTENTION_WG
#: Prompts from this many tokens on run int8 activations when the model is made with them.
INT8_PREFILL_ROWS = 16
#: The decode step and prompts of up to this many tokens run decode_activations (decode_int8's
#: largest M); prompts between this and INT8_PREFILL_ROWS run f32.
DECODE_INT8_ROWS = 8
#: Prefill chains kept, by prompt length.
PREFILL_CHAINS = 2


@dataclasses.dataclass
class GenerateStats:
    """What the last generate() took (wall clock on the host)."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0  # prefill submit until the first new token is read back
    decode_s: float = 0.0  # from then until the last new token is read back
    host_s: float = 0.0  # of decode_s: recording and submitting the decode steps on the host

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return (self.new_tokens - 1) / self.decode_s if self.decode_s and self.new_tokens > 1 else 0.0


class CausalLM:
    """A Llama-family decoder on the GPU: weights uploaded once, a KV cache of max_positions.

    Args:
        weights: the DecoderWeights (q4gsw.llm.load_checkpoint, random_weights).
        max_positions: positions the KV cache holds (prompt + new tokens); default
            min(DEFAULT_MAX_POSITIONS, the model's max_position_embeddings).
        runtime: the Runtime (default: the process's).
        prefill_activations: "f32" (exact, default) or "int8": prompts of at least
            INT8_PREFILL_ROWS tokens run their linears with x quantized to int8 on the GPU
            (q4gsw.linear(activations="int8"): about 2x the f32 GEMM's speed, ~6e-3 relative error).
        decode_activations: "f32" (exact, default) or "int8": decode steps and prompts of up to
            DECODE_INT8_ROWS tokens run their linears on decode_int8 (x quantized per 32 k in the
            kernel, ~5e-3 relative error; H200: 18 µs against 23 at 4096 x 14336, session 6).
            The LM head always runs f32 activations (exact logits of the last hidden state).
        kv_cache: "f32" (default) or "f16": K and V stored in half precision (rounded as they
            are written, read back into f32 arithmetic): half the cache's memory and half the
            attention's cache reads. Needs `shader-f16` (FeatureError before any GPU memory
            is taken where the device lacks it).
    Raises UnsupportedShapeError (before any GPU memory is taken) for shapes the kernels do not
    run: hidden or head_dim not a multiple of 4, head_dim over 256, more than 8 query heads a kv head.
    """

    def __init__(self, weights: DecoderWeights, *, max_positions: int | None = None, runtime=None,
                 prefill_activations: str = "f32", decode_activations: str = "f32", kv_cache: str = "f32"):
        if not isinstance(weights, DecoderWeights):
            raise DTypeError("CausalLM", "weights", "a q4gsw.llm.DecoderWeights", describe(weights))
        c = weights.config
        limit = c.max_position_embeddings
        max_positions = min(DEFAULT_MAX_POSITIONS, limit) if max_positions is None else max_positions
        if isinstance(max_positions, bool) or not isinstance(max_positions, int) or not 1 <= max_positions <= limit:
            raise ArgumentError("CausalLM", "max_positions", f"an int in [1, {limit}] (the model's context)",
                                describe(max_positions))
        if c.hidden_size % 4 or c.head_dim % 4 or c.head_dim > 4 * ops.ATTENTION_WG or c.num_heads > 8 * c.num_kv_heads:
            raise UnsupportedShapeError(f"{c.architecture}: hidden {c.hidden_size}, head_dim {c.head_dim}, "
                                        f"{c.num_heads}/{c.num_kv_heads} heads: the kernels need hidden and head_dim "
                                        f"multiples of 4, head_dim <= {4 * ops.ATTENTION_WG} and at most 8 query "
                                        f"heads per kv head")
        if not isinstance(weights.embed, PackedWeight):
            raise UnsupportedShapeError("the token embedding is kept dense; the GPU runtime gathers int4 embedding "
                                        "rows only (keep_dense may name any linear but model.embed_tokens.weight)")
        runtime = runtime or get_runtime()
        kv_dtype = ops.kv_cache_dtype("CausalLM", kv_cache, runtime.caps)
        #: the linears a checkpoint keeps in high precision, run by Chain.dense_linear
        self._dense = {id(w): DenseWeight(w) for _, w in _linears(weights) if isinstance(w, np.ndarray)}
        self._prefill: dict[tuple[int, bool, bool], tuple[Chain, GpuTensor]] = {}
        self._decode: dict[bool, tuple[Chain, GpuTensor]] = {}  # greedy? -> (chain, logits)
        self.prefill_activations = prefill_activations
        self.decode_activations = decode_activations
        self.weights = weights
        self.config = c
        self.max_positions = max_positions
        self._kv_cache = kv_cache
        self.runtime = runtime
        self.last_stats = GenerateStats()
        self._tokenizer = None
        rt = self.runtime
        usage = rt.wgpu.BufferUsage
        with rt.device_calls():
            cos, sin = c.rope_cos_sin(np.arange(max_positions))
            self._cos_sin = upload(np.stack([cos, sin], axis=-1), runtime=rt)
            self._attn_norms = [upload(layer.attn_norm, runtime=rt) for layer in weights.layers]
            self._mlp_norms = [upload(layer.mlp_norm, runtime=rt) for layer in weights.layers]
            self._final_norm = upload(weights.final_norm, runtime=rt)
            self._qkv_bias = [None if layer.qkv_bias is None else upload(layer.qkv_bias, runtime=rt)
                              for layer in weights.layers]
            self._o_bias = [None if layer.o_bias is None else upload(layer.o_bias, runtime=rt)
                            for layer in weights.layers]
            cache_shape = (c.num_kv_heads, max_positions, c.head_dim)
            self._k_cache = [_zeros(rt, cache_shape, kv_dtype) for _ in weights.layers]
            self._v_cache = [_zeros(rt, cache_shape, kv_dtype) for _ in weights.layers]
            self._state = rt.buffers.create(16, usage.UNIFORM | usage.COPY_DST, "llm/state")
            self._sampling_params = rt.buffers.create(16, usage.UNIFORM | usage.COPY_DST, "llm/sampling")
            self._ids = _zeros(rt, (max_positions,), "uint32")
            self._generated = _zeros(rt, (max_positions,), "uint32")

    @property
    def prefill_activations(self) -> str:
        """"f32" or "int8": how prompts of INT8_PREFILL_ROWS tokens or more run their linears."""
        return self._prefill_activations

    @prefill_activations.setter
    def prefill_activations(self, value: str) -> None:
        self._prefill_activations = _check_activations("prefill_activations", value)
        self._release_chains(self._prefill)  # recorded with the other kind (decode steps never run it)

    @property
    def decode_activations(self) -> str:
        """"f32" or "int8": how decode steps and prompts of up to DECODE_INT8_ROWS tokens run their linears."""
        return self._decode_activations

    @decode_activations.setter
    def decode_activations(self, value: str) -> None:
        self._decode_activations = _check_activations("decode_activations", value)
        self._release_chains(self._decode, self._prefill)  # short prompts run it too

    def _release_chains(self, *caches) -> None:
        """Drop the recorded chains of `caches` (they are recorded again on next use)."""
        for cache in caches:
            for chain, _ in cache.values():
                chain.release()
            cache.clear()

    # --- recording ---------------------------------------------------------------------------

    def _record(self, rows: int, *, all_logits: bool, choose: Sampling | None) -> tuple[Chain, GpuTensor]:
        """A chain of the whole forward over `rows` tokens at positions state.pos + t: the ids
        come from ids[0:rows]; with `choose`, the last row's next token goes to ids[0] and
        generated[state.step]. Returns (chain, logits: (rows or 1, vocab))."""
        c, w = self.config, self.weights
        decode = rows == 1 and not all_logits
        splits = ceil_div(self.max_positions, DECODE_SPLIT_KEYS) if decode else 1
        chain = Chain(runtime=self.runtime, label=f"llm/{'decode' if decode else 'prefill'}")
        act = (self.prefill_activations if rows >= INT8_PREFILL_ROWS
               else self.decode_activations if rows <= DECODE_INT8_ROWS else "f32")

        def linear(x, w, bias=None):
            if isinstance(w, np.ndarray):  # kept dense by the checkpoint
                return chain.dense_linear(x, self._dense[id(w)], bias)
            return chain.linear(x, w, bias, activations=act)

        x = ops.embed_rows(chain, self._ids, w.embed, rows)
        h = ops.add_rms_norm(chain, x, None, self._attn_norms[0], eps=c.rms_norm_eps)
        for i, layer in enumerate(w.layers):
            qkv = linear(h, layer.qkv, self._qkv_bias[i])
            q = ops.rope_kv(chain, qkv, self._cos_sin, self._state, self._k_cache[i], self._v_cache[i],
                            q_heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim)
            a = ops.attention(chain, q, self._k_cache[i], self._v_cache[i], self._state, kv_heads=c.num_kv_heads,
                              head_dim=c.head_dim, splits=splits, split_keys=DECODE_SPLIT_KEYS,
                              window=c.window(i) or 0)
            h = ops.add_rms_norm(chain, x, linear(a, layer.o, self._o_bias[i]), self._mlp_norms[i], eps=c.rms_norm_eps)
            d = linear(ops.swiglu(chain, linear(h, layer.gate_up)), layer.down)
            last = i == len(w.layers) - 1
            norm = self._final_norm if last else self._attn_norms[i + 1]
            h = ops.add_rms_norm(chain, x, d, norm, eps=c.rms_norm_eps,
                                 first_row=rows - 1 if last and not all_logits else 0)
        logits = linear(h, w.lm_head) if isinstance(w.lm_head, np.ndarray) else chain.linear(h, w.lm_head)  # f32 x
        if choose is not None:
            if choose.greedy:
                ops.argmax(chain, logits, self._ids, self._generated, self._state)
            else:
                ops.sample(chain, logits, self._ids, self._generated, self._state, self._sampling_params)
        return chain, logits

    def _prefill_chain(self, rows: int, all_logits: bool, choose: Sampling | None):
        key = (rows, all_logits, choose is None or choose.greedy)
        if key not in self._prefill:
            while len(self._prefill) >= PREFILL_CHAINS:
                self._prefill.pop(next(iter(self._prefill)))[0].release()
            self._prefill[key] = self._record(rows, all_logits=all_logits, choose=choose)
        return self._prefill[key]

    def _decode_chain(self, choose: Sampling):
        if choose.greedy not in self._decode:
            self._decode[choose.greedy] = self._record(1, all_logits=False, choose=choose)
        return self._decode[choose.greedy]

    # --- running -----------------------------------------------------------------------------

    def _set_state(self, pos: int, step: int) -> None:
        self.runtime.device.queue.write_buffer(self._state, 0, np.array([pos, step, 0, 0], np.uint32))

    def _check_prompt(self, fn: str, input_ids, extra: int) -> np.ndarray:
        ids = np.asarray(input_ids) if not isinstance(input_ids, np.ndarray) else input_ids
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
            raise ShapeError(fn, "input_ids", "a non-empty 1-D sequence of token ids (ints)", describe(input_ids))
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ArgumentError(fn, "input_ids", f"ids in [0, {self.config.vocab_size})",
                                f"ids in [{ids.min()}, {ids.max()}]")
        if ids.size + extra > self.max_positions:
            raise ShapeError(fn, "input_ids", f"prompt + new tokens <= max_positions = {self.max_positions} "
                             "(the KV cache; see CausalLM(max_positions=...))", f"{ids.size} + {extra}")
        return ids.astype(np.uint32)

    def logits(self, input_ids) -> np.ndarray:
        """(T, vocab) float32 logits of every position of one sequence (one forward, one submit).

        Args:
            input_ids: (T,) token ids at positions 0..T-1 (overwrites the KV cache).
        """
        ids = self._check_prompt("CausalLM.logits", input_ids, 0)
        with self.runtime.device_calls():
            chain, logits = self._prefill_chain(ids.size, True, None)
            self._ids.write(np.pad(ids, (0, self.max_positions - ids.size)))
            self._set_state(0, 0)
            chain.run()
            return logits.numpy()

    def generate(self, input_ids, max_new_tokens: int, *, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 on_token: Callable[[int], object] | None = None, eos_token_ids=None) -> list[int]:
        """Generate up to max_new_tokens after the prompt; returns the new ids.

        The prompt runs as one prefill submit; then one submit a token, each choosing the next
        token on the GPU (greedy when temperature is 0, else sampled with temperature, top_k,
        top_p and seed), so a step reads back one token id. Steps are queued ahead of the
        read-back, so the host records the next step while the GPU runs this one.

        Args:
            input_ids: (T,) prompt token ids.
            max_new_tokens: >= 1.
            on_token: called with each new id as it arrives (in order).
            eos_token_ids: stop after one of these (default: the config's; () never stops early).
        """
        fn = "CausalLM.generate"
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ArgumentError(fn, "max_new_tokens", "an int >= 1", describe(max_new_tokens))
        ids = self._check_prompt(fn, input_ids, max_new_tokens)
        choose = sampling(fn, temperature, top_k, top_p, seed, self.config.vocab_size)
        stop = set(self.config.eos_token_ids if eos_token_ids is None else eos_token_ids)
        rt = self.runtime
        stats = self.last_stats = GenerateStats(prompt_tokens=int(ids.size))
        with rt.device_calls():
            prefill, _ = self._prefill_chain(ids.size, False, choose)
            decode, _ = self._decode_chain(choose) if max_new_tokens > 1 else (None, None)
            if not choose.greedy:
                rt.device.queue.write_buffer(self._sampling_params, 0, choose.words())
            self._ids.write(np.pad(ids, (0, self.max_positions - ids.size)))
            stream = TokenStream(rt, self._generated)
            new: list[int] = []
            t0 = time.perf_counter()
            self._set_state(0, 0)
            stream.submit(prefill, 0)
            for step in range(1, max_new_tokens + 1):
                if step < max_new_tokens:  # queue step `step` before reading token step - 1
                    t_host = time.perf_counter()
                    self._set_state(ids.size + step - 1, step)
                    stream.submit(decode, step)
                    stats.host_s += time.perf_counter() - t_host
                token = stream.read(step - 1)
                if step == 1:
                    stats.prefill_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                new.append(token)
                if on_token is not None:
                    on_token(token)
                if token in stop:
                    break
            stream.drain()
            stats.new_tokens = len(new)
            stats.decode_s = time.perf_counter() - t0
        return new

    # --- text and weights -------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The checkpoint's tokenizers.Tokenizer (tokenizer.json), or None."""
        if self._tokenizer is None and self.weights.tokenizer_path:
            from ..io._deps import require

            self._tokenizer = require("tokenizers", "CausalLM.tokenizer").Tokenizer.from_file(
                self.weights.tokenizer_path)
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of text through the checkpoint's tokenizer (ArgumentError without one)."""
        if self.tokenizer is None:
            raise ArgumentError("CausalLM.encode", "text", "a model whose checkpoint has tokenizer.json",
                                f"{self.weights.source!r} without one")
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        """Text of token ids through the checkpoint's tokenizer."""
        if self.tokenizer is None:
            raise ArgumentError("CausalLM.decode", "ids", "a model whose checkpoint has tokenizer.json",
                                f"{self.weights.source!r} without one")
        return self.tokenizer.decode([int(i) for i in ids])

    def dequantized_state_dict(self) -> dict[str, np.ndarray]:
        """{Hugging Face name: float32 ndarray}: the weights exactly as q4gsw computes with them."""
        return self.weights.dequantized_state_dict()

    @property
    def weight_bytes_per_token(self) -> int:
        """Bytes of weights and scales a decode step reads: every linear of every layer and the
        LM head (the embedding contributes one row, left out)."""
        layers = sum(getattr(layer, name).nbytes for layer in self.weights.layers
                     for name in ("qkv", "o", "gate_up", "down"))
        return layers + self.weights.lm_head.nbytes

    @property
    def kv_cache(self) -> str:
        """"f32" or "f16": how the KV cache stores K and V (chosen when the model is made)."""
        return self._kv_cache

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """Bytes of KV cache a position takes: K and V of every layer's kv heads (halved by kv_cache="f16")."""
        c = self.config
        return 2 * len(self.weights.layers) * c.num_kv_heads * c.head_dim * (2 if self.kv_cache == "f16" else 4)

    def release(self) -> None:
        """Free the chains, caches and weights' GPU copies now."""
        self._release_chains(self._decode, self._prefill)
        for _, w in _linears(self.weights):
            self.runtime.weights.release(self._dense.get(id(w), w))


def _linears(weights: DecoderWeights):
    """(name, weight) of every linear the forward runs, the embedding included."""
    yield "embed", weights.embed
    for i, layer in enumerate(weights.layers):
        for name in ("qkv", "o", "gate_up", "down"):
            yield f"layers.{i}.{name}", getattr(layer, name)
    if weights.lm_head is not weights.embed:
        yield "lm_head", weights.lm_head


def _zeros(runtime, shape, dtype: str = "float32") -> GpuTensor:
    """A zero-filled GpuTensor (WebGPU zero-initializes new buffers)."""
    u = runtime.wgpu.BufferUsage
    nbytes = np.dtype(dtype).itemsize * math.prod(shape)
    buf = runtime.buffers.create(nbytes, u.STORAGE | u.COPY_SRC | u.COPY_DST, "llm/state-tensor")
    return GpuTensor(buf, shape, runtime, dtype)


def load_model(path, *, group_size: int = 128, max_positions: int | None = None, keep_dense=None,
               progress=None, runtime=None, prefill_activations: str = "f32", decode_activations: str = "f32",
               kv_cache: str = "f32") -> CausalLM:
    """A causal LM held on the GPU, from a Hugging Face checkpoint directory (float weights
    quantized at load), a q4gsw model directory (save_checkpoint) or a GGUF file with Q4_0
    weights. See q4gsw.llm.load_checkpoint and CausalLM (kv_cache="f16": a half-precision KV
    cache, checked against the device before the checkpoint is read); nothing is downloaded.

    Example:
        model = q4gsw.load_model("Llama-3.2-1B-Instruct/", progress=True)
        new_ids = model.generate(model.encode("The capital of France is"), 32)
        print(model.decode(new_ids))
    """
    from .checkpoint import load_checkpoint

    runtime = runtime or get_runtime()
    ops.kv_cache_dtype("load_model", kv_cache, runtime.caps)
    weights = load_checkpoint(path, group_size=group_size, keep_dense=keep_dense, progress=progress)
    return CausalLM(weights, max_positions=max_positions, runtime=runtime, prefill_activations=prefill_activations,
                    decode_activations=decode_activations, kv_cache=kv_cache)


def _check_activations(name: str, value) -> str:
    if value not in ("f32", "int8"):  # else ArgumentError naming the option
        raise ArgumentError("CausalLM", name, "'f32' or 'int8'", describe(value))
    return value
