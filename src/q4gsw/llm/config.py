"""DecoderConfig: the shapes and hyperparameters of a Llama-family decoder, and its RoPE tables."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from ..checks import describe
from ..errors import ArgumentError, FormatError, ShapeError

#: The Hugging Face architectures this package runs (config.json "architectures"[0]).
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
_MODEL_TYPE = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}
#: transformers' defaults for keys a config.json may leave out.
_MAX_POSITIONS = {"LlamaForCausalLM": 2048, "Qwen2ForCausalLM": 32768, "MistralForCausalLM": 131072}


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's RoPE frequency scaling (transformers' rope_type "llama3")."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """A Llama-family decoder: pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP.

    Attributes:
        architecture: one of ARCHITECTURES.
        vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads,
        head_dim: the shapes; q has num_heads * head_dim features, k and v num_kv_heads * head_dim.
        rms_norm_eps: the RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: None (plain RoPE) or Llama3RopeScaling.
        rope_freq_factors: None, or (head_dim/2,) divisors of the inverse frequencies (llama.cpp's
            `rope_freqs` tensor of a GGUF file, its form of Llama 3 scaling); not with rope_scaling.
        max_position_embeddings: the context length the model was trained for.
        tie_word_embeddings: the LM head is the token embedding.
        qkv_bias: q, k and v projections have biases (Qwen2; Llama with attention_bias).
        o_bias: the output projection has a bias (Llama with attention_bias).
        sliding_window: None, or the attention window W: position i sees positions j with
            i - W < j <= i, in the layers listed in sliding_layers.
        sliding_layers: indices of the layers that use sliding_window.
        bos_token_id: None or the begin-of-sequence token.
        eos_token_ids: the end-of-sequence tokens (possibly none).
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Llama3RopeScaling | None = None
    rope_freq_factors: tuple[float, ...] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        fn = "DecoderConfig"
        if self.architecture not in ARCHITECTURES:
            raise FormatError(fn, "architecture", f"one of {list(ARCHITECTURES)}", repr(self.architecture))
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ShapeError(fn, name, "a positive int", describe(value))
        if self.num_heads % self.num_kv_heads:
            raise ShapeError(fn, "num_kv_heads", f"a divisor of num_heads = {self.num_heads}", str(self.num_kv_heads))
        if self.head_dim % 2:
            raise ShapeError(fn, "head_dim", "an even number (RoPE rotates pairs)", str(self.head_dim))
        if self.rope_scaling is not None and self.rope_freq_factors is not None:
            raise ArgumentError(fn, "rope_freq_factors", "None when rope_scaling is set", "both set")
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            raise ShapeError(fn, "rope_freq_factors", f"head_dim/2 = {self.head_dim // 2} values",
                             f"{len(self.rope_freq_factors)}")
        if self.sliding_window is None and self.sliding_layers:
            raise ArgumentError(fn, "sliding_layers", "() when sliding_window is None", repr(self.sliding_layers))
        if self.sliding_window is not None and (not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
            raise ArgumentError(fn, "sliding_window", "None or a positive int", describe(self.sliding_window))
        if any(not 0 <= i < self.num_layers for i in self.sliding_layers):
            raise ArgumentError(fn, "sliding_layers", f"layer indices in [0, {self.num_layers})",
                                repr(self.sliding_layers))

    @property
    def q_size(self) -> int:
        """Output features of the q projection: num_heads * head_dim."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Output features of the k (and of the v) projection: num_kv_heads * head_dim."""
        return self.num_kv_heads * self.head_dim

    def window(self, layer: int) -> int | None:
        """The attention window of `layer` (None: all earlier positions)."""
        return self.sliding_window if layer in self.sliding_layers else None

    # --- RoPE -------------------------------------------------------------------------------

    def rope_inv_freq(self) -> np.ndarray:
        """(head_dim/2,) float32 inverse frequencies, as transformers computes them in float32.

        transformers: `1 / base ** (arange(0, dim, 2) / dim)` in float32, then for "llama3" its
        wavelength-dependent scaling, every step a float32 tensor op (replayed here op for op,
        including that `scalar / tensor` is `reciprocal(tensor) * scalar` in torch). The one
        difference: torch's float32 pow is within 1 ulp of the correctly rounded power used here.
        """
        dim = self.head_dim
        exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
        power = (np.float64(np.float32(self.rope_theta)) ** exponent.astype(np.float64)).astype(np.float32)
        inv = np.float32(1.0) / power
        if self.rope_freq_factors is not None:
            return inv / np.asarray(self.rope_freq_factors, np.float32)
        s = self.rope_scaling
        if s is None:
            return inv
        f32 = np.float32
        factor, low = f32(s.factor), f32(s.low_freq_factor)
        old = s.original_max_position_embeddings
        low_wavelen, high_wavelen = f32(old / s.low_freq_factor), f32(old / s.high_freq_factor)
        wavelen = (f32(1.0) / inv) * f32(2 * math.pi)
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = ((f32(1.0) / wavelen) * f32(old) - low) / f32(s.high_freq_factor - s.low_freq_factor)
        smoothed = (f32(1.0) - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)

    def rope_cos_sin(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin of the RoPE angles, as transformers computes them in float32.

        Args:
            positions: (T,) integer positions.
        Returns:
            (cos, sin), each (T, head_dim/2) float32 of `float32(position) * inv_freq`; feature
            i and i + head_dim/2 of a head rotate together by angle [t, i] (rotate_half).
        """
        positions = np.asarray(positions)
        if positions.ndim != 1 or positions.dtype.kind not in "iu":
            raise ShapeError("rope_cos_sin", "positions", "(T,) integer array", describe(positions))
        angles = positions.astype(np.float32)[:, None] * self.rope_inv_freq()[None, :]
        return np.cos(angles), np.sin(angles)

    # --- Hugging Face config.json -----------------------------------------------------------

    @classmethod
    def from_hf(cls, config: dict, *, source: str = "config.json") -> DecoderConfig:
        """Read a Hugging Face config.json dict (transformers 4 or 5 layout).

        Args:
            config: the parsed config.json.
            source: named in error messages (e.g. the file path).
        Raises:
            FormatError: an architecture, activation or RoPE type this package does not run,
                mlp_bias, partial rotary embeddings, or a missing or malformed key.
        """
        fn = "DecoderConfig.from_hf"
        if not isinstance(config, dict):
            raise FormatError(fn, "config", "a dict (parsed config.json)", describe(config))

        def get(key, default=dataclasses.MISSING):
            if key in config and config[key] is not None:
                return config[key]
            if default is dataclasses.MISSING:
                raise FormatError(fn, f"{source}: {key!r}", "the key to be present", "missing")
            return default

        archs = get("architectures")
        arch = archs[0] if isinstance(archs, list) and archs else archs
        if arch not in ARCHITECTURES:
            raise FormatError(fn, f"{source}: 'architectures'", f"one of {list(ARCHITECTURES)}", repr(archs))
        if get("hidden_act", "silu") != "silu":
            raise FormatError(fn, f"{source}: 'hidden_act'", "'silu' (SwiGLU)", repr(config["hidden_act"]))
        if get("mlp_bias", False):
            raise FormatError(fn, f"{source}: 'mlp_bias'", "false (MLP biases are not supported)", "true")
        hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        layers = int(get("num_hidden_layers"))
        rope = dict(get("rope_parameters", None) or get("rope_scaling", None) or {})
        if any(isinstance(v, dict) for v in rope.values()):
            raise FormatError(fn, f"{source}: 'rope_parameters'", "one RoPE for every layer", "per-layer-type RoPE")
        if float(rope.get("partial_rotary_factor", get("partial_rotary_factor", 1.0))) != 1.0:
            raise FormatError(fn, f"{source}: 'partial_rotary_factor'", "1.0", repr(get("partial_rotary_factor", None)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        max_positions = int(get("max_position_embeddings", _MAX_POSITIONS[arch]))
        scaling = None
        if rope_type == "llama3":
            try:
                scaling = Llama3RopeScaling(
                    float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"]),
                    int(rope.get("original_max_position_embeddings", max_positions)))
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(fn, f"{source}: 'rope_scaling'", "llama3 factor, low_freq_factor, high_freq_factor",
                                  repr(rope)) from exc
        elif rope_type != "default":
            raise FormatError(fn, f"{source}: rope type", "'default' or 'llama3'", repr(rope_type))
        window, sliding = None, ()
        if arch == "MistralForCausalLM" and get("sliding_window", None) is not None:
            window, sliding = int(config["sliding_window"]), tuple(range(layers))
        elif arch == "Qwen2ForCausalLM" and get("use_sliding_window", False) and get("sliding_window", None):
            window = int(config["sliding_window"])
            types = get("layer_types", None)
            if types is None:
                types = ["sliding_attention" if i >= int(get("max_window_layers", 28)) else "full_attention"
                         for i in range(layers)]
            sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
        bias = bool(get("attention_bias", False))
        eos = get("eos_token_id", [])
        factors = get("rope_freq_factors", None)  # q4gsw's own key: written by save_checkpoint for GGUF models
        return cls(
            architecture=arch, vocab_size=int(get("vocab_size")), hidden_size=hidden,
            intermediate_size=int(get("intermediate_size")), num_layers=layers, num_heads=heads,
            num_kv_heads=int(get("num_key_value_heads", heads)), head_dim=int(get("head_dim", hidden // heads)),
            rms_norm_eps=float(get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", get("rope_theta", 10000.0))), rope_scaling=scaling,
            rope_freq_factors=None if factors is None else tuple(float(f) for f in factors),
            max_position_embeddings=max_positions, tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            qkv_bias=arch == "Qwen2ForCausalLM" or bias, o_bias=arch == "LlamaForCausalLM" and bias,
            sliding_window=window, sliding_layers=sliding, bos_token_id=get("bos_token_id", None),
            eos_token_ids=tuple(eos) if isinstance(eos, list) else (int(eos),),
        )

    def to_hf(self) -> dict:
        """A config.json dict that transformers (4 or 5) and from_hf read back as this config.

        A config with rope_freq_factors (from a GGUF file) has no transformers equivalent; its
        factors are written under q4gsw's own key "rope_freq_factors", which transformers ignores.
        """
        arch = self.architecture
        if arch == "LlamaForCausalLM" and self.qkv_bias != self.o_bias:
            raise FormatError("DecoderConfig.to_hf", "qkv_bias", f"o_bias = {self.o_bias} (Llama's attention_bias)",
                              str(self.qkv_bias))
        out = {
            "architectures": [arch], "model_type": _MODEL_TYPE[arch], "hidden_act": "silu",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "rope_scaling": None, "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0],
        }
        if self.rope_scaling is not None:
            out["rope_scaling"] = {"rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)}
        if self.rope_freq_factors is not None:
            out["rope_freq_factors"] = list(self.rope_freq_factors)
        if arch == "LlamaForCausalLM":
            out.update(attention_bias=self.qkv_bias, mlp_bias=False)
        if arch == "MistralForCausalLM":
            out["sliding_window"] = self.sliding_window
            if self.sliding_window is not None and self.sliding_layers != tuple(range(self.num_layers)):
                raise FormatError("DecoderConfig.to_hf", "sliding_layers", "every layer (Mistral)",
                                  repr(self.sliding_layers))
        if arch == "Qwen2ForCausalLM":
            first = min(self.sliding_layers, default=self.num_layers)
            if self.sliding_layers != tuple(range(first, self.num_layers)):
                raise FormatError("DecoderConfig.to_hf", "sliding_layers",
                                  "the last layers (Qwen2's max_window_layers)", repr(self.sliding_layers))
            out.update(use_sliding_window=self.sliding_window is not None, sliding_window=self.sliding_window,
                       max_window_layers=first)
        return out


#: Shapes and hyperparameters of real models, for random-weight benchmarks (random_weights).
PRESETS = {
    "llama-3-8b": DecoderConfig(
        "LlamaForCausalLM", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
        num_heads=32, num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
        max_position_embeddings=8192, tie_word_embeddings=False, bos_token_id=128000, eos_token_ids=(128001,)),
    "llama-3.2-1b": DecoderConfig(
        "LlamaForCausalLM", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
        num_heads=32, num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=Llama3RopeScaling(32.0, 1.0, 4.0, 8192), max_position_embeddings=131072,
        tie_word_embeddings=True, bos_token_id=128000, eos_token_ids=(128001,)),
    "qwen2.5-0.5b": DecoderConfig(
        "Qwen2ForCausalLM", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
        num_heads=14, num_kv_heads=2, head_dim=64, rms_norm_eps=1e-6, rope_theta=1000000.0,
        max_position_embeddings=32768, tie_word_embeddings=True, qkv_bias=True,
        bos_token_id=151643, eos_token_ids=(151643,)),
}
