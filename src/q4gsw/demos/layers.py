"""`q4gsw demo`: a Llama-shaped stack of quantized linear layers on the default adapter."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..format import linear_reference
from ..ops.linear import linear
from ..profile import profile
from ..quantize import quantization_error, quantize
from ..runtime import get_runtime


@dataclasses.dataclass(frozen=True)
class BlockShape:
    """Linear shapes of one Llama block (grouped-query attention, SwiGLU MLP)."""

    hidden: int = 1024
    intermediate: int = 2816
    heads: int = 16
    kv_heads: int = 4

    @property
    def linears(self) -> dict[str, tuple[int, int]]:
        """name -> (out_features N, in_features K)."""
        d, f = self.hidden, self.intermediate
        kv = d // self.heads * self.kv_heads
        return {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, d),
                "gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}


def _silu(v):
    return v / (1.0 + np.exp(-v))


def _block(x, layer, matmul):
    """The linear data flow of a block (attention mixing replaced by v, so only linears run)."""
    q, k, v = (matmul(x, layer[name]) for name in ("q_proj", "k_proj", "v_proj"))
    heads_per_kv = q.shape[-1] // v.shape[-1]
    attn = np.repeat(v, heads_per_kv, axis=-1) * (1.0 + 0.0 * q)  # stands in for softmax(qk)v
    h = x + matmul(attn.astype(np.float32), layer["o_proj"])
    g = matmul(h, layer["gate_proj"])
    u = matmul(h, layer["up_proj"])
    return (h + matmul((_silu(g) * u).astype(np.float32), layer["down_proj"])).astype(np.float32)


def _cosine(a, b) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_demo(layers: int = 2, tokens: tuple[int, ...] = (1, 16), group_size: int = 128,
             shape: BlockShape = BlockShape(), seed: int = 0, out=print) -> dict:
    """Quantize `layers` random Llama blocks, run them on WebGPU, print accuracy and the profile."""
    rt = get_runtime()
    out(f"adapter: {rt.caps.adapter_name} ({rt.caps.adapter_type}, {rt.caps.backend}; {rt.caps.driver})")
    rng = np.random.default_rng(seed)
    float_layers, q_layers = [], []
    for _ in range(layers):
        fl, ql = {}, {}
        for name, (n, k) in shape.linears.items():
            w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
            fl[name], ql[name] = w, quantize(w, group_size)
        float_layers.append(fl)
        q_layers.append(ql)
    err = quantization_error(float_layers[0]["q_proj"], q_layers[0]["q_proj"])
    out(f"{layers} blocks x {len(shape.linears)} linears, hidden {shape.hidden}, "
        f"intermediate {shape.intermediate}, group size {group_size}; quantization (q_proj): {err}")
    summary = {}
    with profile() as prof:
        for m in tokens:
            x0 = rng.standard_normal((m, shape.hidden)).astype(np.float32)
            x_gpu, x_ref, x_float = x0, x0, x0
            for fl, ql in zip(float_layers, q_layers):
                x_gpu = _block(x_gpu, ql, lambda a, w: linear(a, w))
                x_ref = _block(x_ref, ql, lambda a, w: linear_reference(a, w).astype(np.float32))
                x_float = _block(x_float, fl, lambda a, w: (a @ w.T).astype(np.float32))
            kernel_err = float(np.abs(x_gpu - x_ref).max() / np.abs(x_ref).max())
            cos = _cosine(x_gpu, x_float)
            summary[m] = {"kernel_rel_error": kernel_err, "cosine_vs_float": cos}
            out(f"M={m:>3}: WebGPU vs float64 reference of the quantized model: max rel. error "
                f"{kernel_err:.2e}; vs the float (unquantized) model: cosine {cos:.5f}")
    out("")
    out(prof.table())
    return summary
