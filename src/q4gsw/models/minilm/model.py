"""all-MiniLM-L6-v2's forward in numpy (BERT encoder, mean pooling, L2 normalization), with its
36 linear layers run one of three ways (LINEAR_MODES):

- "q4gsw":     q4gsw.linear on the weights quantized by the recipe, and q4gsw.dense_linear on
               the linears it keeps dense (WebGPU);
- "reference": the float64 reference of the same weights (q4gsw.linear_reference);
- "float":     the float32 weights as they are, x @ W.T + b in numpy (the unquantized model).

The forward is the one sentence-transformers runs for this model (modules.json: Transformer,
Pooling, Normalize): BERT embeddings + LayerNorm, 6 post-LayerNorm encoder layers
(self-attention with the padding mask, exact erf GELU feed-forward), mean pooling over the
attention mask, L2 normalization. Everything but the linears runs in numpy float32.
"""

from __future__ import annotations

import math

import numpy as np

from ...format import linear_reference
from ...mixed import int4_bytes
from ...ops.dense import dense_linear
from ...ops.linear import linear
from .files import MiniLMConfig, Tokens, load_files
from .recipe import dense_linears, quantize_linears
from .sentences import CALIBRATION_SENTENCES

LINEAR_MODES = ("q4gsw", "reference", "float")
#: How encode() runs: the whole forward on the GPU (gpu.py), or numpy with the linears run one
#: of LINEAR_MODES' ways.
ENCODE_MODES = ("gpu", *LINEAR_MODES)
#: The linears of one encoder layer, as named in model.safetensors (without "encoder.layer.i.").
LAYER_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")


class MiniLM:
    """all-MiniLM-L6-v2 with float and q4gsw-quantized linears.

    Attributes:
        config: MiniLMConfig.
        tensors: name -> float32 ndarray, as in model.safetensors.
        packed: linear name (e.g. "encoder.layer.0.attention.self.query") -> PackedWeight, for
            every linear not kept dense.
        dense: linear name -> DenseWeight, for the linears kept dense (mixed precision).
        group_size: the quantization group size.
    """

    def __init__(self, config: MiniLMConfig, tensors: dict[str, np.ndarray], tokenizer, *, group_size: int = 128,
                 method: str = "rtn", calibration=CALIBRATION_SENTENCES, dense=None, dense_budget=None,
                 dense_dtype: str = "float16"):
        self.config = config
        self.tensors = tensors
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.method = method
        self._gpu = None
        self.dense = dense_linears(self, dense, dense_budget, group_size=group_size, dtype=dense_dtype)
        self.packed, self.biases = self.quantize_linears(method, group_size, calibration)

    @classmethod
    def load(cls, *, group_size: int = 128, method: str = "rtn", calibration=CALIBRATION_SENTENCES, dense=None,
             dense_budget: float | None = None, dense_dtype: str = "float16") -> "MiniLM":
        """Load the packaged model (no download) and quantize its linears.

        Args:
            group_size: elements of K per scale (K is 384 or 1536).
            method: one of QUANTIZATION_METHODS (see quantize_linears).
            calibration: sentences whose activations calibrate method="gptq".
            dense: linear names (or fnmatch patterns, e.g. "encoder.layer.5.*") kept dense.
            dense_budget: or let the recipe choose the dense linears: the linear weights may
                take up to dense_budget times the bytes of all 36 in int4 (e.g. 1.5); see
                recipe.choose_dense_linears.
            dense_dtype: how dense linears are stored, "float16" or "float32".
        """
        config = MiniLMConfig.from_package()
        tensors, tokenizer = load_files(config)
        return cls(config, tensors, tokenizer, group_size=group_size, method=method, calibration=calibration,
                   dense=dense, dense_budget=dense_budget, dense_dtype=dense_dtype)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the 36 linear weights as loaded ("int4", "dense", "total"), and of all 36
        in int4 at this group size ("all_int4"); biases (fp32 either way) are not counted."""
        int4 = sum(p.nbytes for p in self.packed.values())
        dense = sum(d.nbytes for d in self.dense.values())
        all_int4 = sum(int4_bytes(*self.tensors[n + ".weight"].shape, self.group_size) for n in self.linear_names)
        return {"int4": int4, "dense": dense, "total": int4 + dense, "all_int4": all_int4}

    def quantize_linears(self, method: str, group_size: int, calibration=CALIBRATION_SENTENCES):
        """Quantize the 36 linears; every result is in the q4gsw format at `group_size`.

        - "rtn":  q4gsw.quantize (torchao's amax / 7.5 scale, round to nearest); biases unchanged.
        - "gptq": per layer, with its inputs X on `calibration` in the float model: scales from
          search_scales weighted by diag(X.T @ X) (static groups), then quantize_gptq with those
          scales, then corrected_bias with the mean of X (see docs/quantization.md).

        Args:
            method: one of QUANTIZATION_METHODS.
            group_size: elements of K per scale.
            calibration: list of str (method "gptq" only).
        Returns:
            (name -> PackedWeight, name -> float32 bias the linear adds), without the linears
            kept dense (self.dense), whose biases stay as they are.
        """
        return quantize_linears(self, method, group_size, calibration, skip=self.dense)

    def linear_inputs(self, sentences) -> dict[str, np.ndarray]:
        """What each linear receives in the float model, over the tokens (not the padding) of `sentences`.

        Returns:
            linear name -> (tokens, K) float32.
        """
        tokens = self.tokenize(sentences)
        keep = tokens.mask.astype(bool)
        seen: dict[str, np.ndarray] = {}
        t = self.tensors

        def record(name, x):
            seen[name] = x[keep]
            return (x @ t[name + ".weight"].T + t[name + ".bias"]).astype(np.float32)

        self._forward(tokens, record)
        return seen

    @property
    def linear_names(self) -> list[str]:
        return [f"encoder.layer.{i}.{name}" for i in range(self.config.layers) for name in LAYER_LINEARS]

    def tokenize(self, sentences) -> Tokens:
        """Tokenize a list of strings as sentence-transformers does for this model."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences) or not sentences:
            raise TypeError(f"tokenize: expected a non-empty list of str, got {sentences!r:.80}")
        enc = self.tokenizer.encode_batch(list(sentences))
        return Tokens(ids=np.array([e.ids for e in enc], np.int64),
                      type_ids=np.array([e.type_ids for e in enc], np.int64),
                      mask=np.array([e.attention_mask for e in enc], np.float32))

    def encode(self, sentences, *, mode: str = "q4gsw") -> np.ndarray:
        """Sentence embeddings.

        Args:
            sentences: list of str.
            mode: one of ENCODE_MODES: "gpu" runs the whole forward on the GPU (GpuEncoder: one
                submit per batch); the others run it in numpy with the linears run as
                LINEAR_MODES says.
        Returns:
            (B, hidden) float32, unit L2 norm per row.
        """
        if mode not in ENCODE_MODES:
            raise ValueError(f"mode: expected one of {ENCODE_MODES}, got {mode!r}")
        tokens = self.tokenize(sentences)
        if mode == "gpu":
            return self.gpu().encode(tokens)
        return self.pool(self.forward(tokens, mode=mode), tokens.mask)

    def gpu(self, *, runtime=None):
        """The GpuEncoder of this model (made, and its weights uploaded, on first use)."""
        from .gpu import GpuEncoder

        if self._gpu is None or (runtime is not None and self._gpu.runtime is not runtime):
            self._gpu = GpuEncoder(self, runtime=runtime)
        return self._gpu

    def linear_fn(self, mode: str):
        """name, x (..., K) float32 -> (..., N) float32, for one of LINEAR_MODES."""
        t, packed, biases, dense = self.tensors, self.packed, self.biases, self.dense
        if mode == "q4gsw":
            def run(name, x):
                if name in dense:
                    return dense_linear(x, dense[name], bias=biases[name])
                return linear(x, packed[name], bias=biases[name])
            return run
        if mode == "reference":
            return lambda name, x: linear_reference(x, dense[name] if name in dense else packed[name], biases[name]).astype(np.float32)
        if mode == "float":
            return lambda name, x: (x @ t[name + ".weight"].T + t[name + ".bias"]).astype(np.float32)
        raise ValueError(f"mode: expected one of {LINEAR_MODES}, got {mode!r}")

    def forward(self, tokens: Tokens, *, mode: str = "q4gsw") -> np.ndarray:
        """The BERT encoder: (B, T) tokens -> (B, T, hidden) float32 last hidden states."""
        return self._forward(tokens, self.linear_fn(mode))

    def _forward(self, tokens: Tokens, lin) -> np.ndarray:
        h = self.embed(tokens)
        for i in range(self.config.layers):
            h = self.layer(i, h, tokens, lin)
        return h

    def embed(self, tokens: Tokens) -> np.ndarray:
        """BERT's embeddings + LayerNorm: (B, T) tokens -> (B, T, hidden) float32, the input of layer 0."""
        c, t = self.config, self.tensors
        n = tokens.ids.shape[1]
        h = (t["embeddings.word_embeddings.weight"][tokens.ids]
             + t["embeddings.position_embeddings.weight"][np.arange(n)][None]
             + t["embeddings.token_type_embeddings.weight"][tokens.type_ids])
        return _layer_norm(h.astype(np.float32), t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"],
                           c.layer_norm_eps)

    def layer(self, i: int, h: np.ndarray, tokens: Tokens, lin) -> np.ndarray:
        """Encoder layer i (post-LayerNorm self-attention with the padding mask, then the erf-GELU
        feed-forward) on hidden states h (B, T, hidden), its linears run by lin(name, x)."""
        c, t = self.config, self.tensors
        b, n = tokens.ids.shape
        ln = lambda x, name: _layer_norm(x, t[name + ".weight"], t[name + ".bias"], c.layer_norm_eps)  # noqa: E731
        d = c.hidden // c.heads
        # HF BERT's additive mask: 0 where attended, the float32 minimum on padding keys.
        additive = ((1.0 - tokens.mask) * np.finfo(np.float32).min)[:, None, None, :].astype(np.float32)
        split = lambda x: x.reshape(b, n, c.heads, d).transpose(0, 2, 1, 3)  # noqa: E731
        p = f"encoder.layer.{i}."
        q, k, v = (split(lin(p + f"attention.self.{s}", h)) for s in ("query", "key", "value"))
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d)) + additive
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = (scores / scores.sum(axis=-1, keepdims=True)).astype(np.float32)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, c.hidden)
        h = ln(lin(p + "attention.output.dense", ctx) + h, p + "attention.output.LayerNorm")
        inner = _gelu(lin(p + "intermediate.dense", h))
        return ln(lin(p + "output.dense", inner) + h, p + "output.LayerNorm")

    @staticmethod
    def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean over the attention mask, then L2 normalization (sentence-transformers' Pooling, Normalize)."""
        m = mask[:, :, None]
        mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _layer_norm(x, weight, bias, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x):
    """HF's "gelu": x * Phi(x) with the exact erf (not the tanh approximation)."""
    e = _erf(x.astype(np.float64) / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x * (1.0 + e)).astype(np.float32)
