"""How MiniLM's 36 linears are quantized: round to nearest, or the calibrated "gptq" recipe
(searched static scales, GPTQ with them, bias correction), and which of them stay dense (mixed
precision: by name, or chosen under a byte budget from measured sensitivities); see
docs/quantization.md."""

from __future__ import annotations

import fnmatch

import numpy as np

from ...format import DENSE_DTYPES, DenseWeight, PackedWeight
from ...mixed import choose_dense, dense_bytes, int4_bytes
from ...quantize import corrected_bias, quantize, quantize_gptq, search_scales
from .compare import cosines
from .sentences import CALIBRATION_SENTENCES

#: How MiniLM.load quantizes the 36 linears (see quantize_linears).
QUANTIZATION_METHODS = ("rtn", "gptq")
#: The calibration sentences whose embeddings measure each linear's sensitivity: the first 64
#: (the choice at budget 1.5 is the same with all 128; with 32 it differs, see docs/quantization.md).
SENSITIVITY_SENTENCES = CALIBRATION_SENTENCES[:64]


def quantize_linears(model, method: str, group_size: int, calibration, *, skip=()):
    """Quantize model's linears (all but `skip`); every result is in the q4gsw format at `group_size`.

    Args:
        model: the MiniLM (its float tensors, linear names and linear_inputs()).
        method: one of QUANTIZATION_METHODS.
        group_size: elements of K per scale.
        calibration: list of str (method "gptq" only).
        skip: names left out (the linears kept dense); their biases stay as they are.
    Returns:
        (name -> PackedWeight, name -> float32 bias the linear adds; every linear has a bias).
    """
    if method not in QUANTIZATION_METHODS:
        raise ValueError(f"method: expected one of {QUANTIZATION_METHODS}, got {method!r}")
    t = model.tensors
    biases = {name: t[name + ".bias"] for name in model.linear_names}
    names = [name for name in model.linear_names if name not in skip]
    if method == "rtn":
        return {name: quantize(t[name + ".weight"], group_size) for name in names}, biases
    inputs = model.linear_inputs(list(calibration))
    packed = {}
    for name in names:
        w, x = t[name + ".weight"], inputs.pop(name)
        packed[name] = quantize_gptq_static(w, x, group_size)
        biases[name] = corrected_bias(w, packed[name], x.mean(axis=0, dtype=np.float64), t[name + ".bias"])
    return packed, biases


def quantize_gptq_static(w: np.ndarray, x: np.ndarray, group_size: int = 128) -> PackedWeight:
    """The "gptq" recipe for one linear: search_scales weighted by E[x_k^2], then GPTQ with those
    scales fixed (static groups, columns in order).

    Args:
        w: (N, K) float32 weight.
        x: (S, K) float inputs of the linear on calibration data.
        group_size: elements of K per scale.
    Returns:
        PackedWeight.
    """
    importance = np.einsum("sk,sk->k", x, x, dtype=np.float64) / x.shape[0]
    return quantize_gptq(w, x, group_size, scales=search_scales(w, group_size, importance=importance))


def dense_linears(model, dense=None, dense_budget: float | None = None, *, group_size: int = 128,
                  dtype: str = "float16") -> dict[str, DenseWeight]:
    """The linears MiniLM keeps dense, as DenseWeights of `dtype`: those named by `dense` (names
    or fnmatch patterns), or those choose_dense_linears picks under `dense_budget`, or none."""
    if dense is not None and dense_budget is not None:
        raise ValueError("dense, dense_budget: expected at most one of them, got both")
    if dtype not in DENSE_DTYPES:
        raise ValueError(f"dense_dtype: expected one of {DENSE_DTYPES}, got {dtype!r}")
    if isinstance(dense, str):
        dense = [dense]
    if dense_budget is not None:
        names = choose_dense_linears(model, dense_budget, group_size=group_size, dtype=dtype)
    elif dense is not None:
        unmatched = [pat for pat in dense if not fnmatch.filter(model.linear_names, pat)]
        if unmatched:
            raise ValueError(f"dense: expected linear names or patterns, got {unmatched} matching none "
                             f"(e.g. {model.linear_names[0]!r})")
        names = [n for n in model.linear_names if any(fnmatch.fnmatchcase(n, pat) for pat in dense)]
    else:
        names = []
    return {name: DenseWeight.from_float(model.tensors[name + ".weight"], dtype) for name in names}


def linear_sensitivities(model, sentences=SENSITIVITY_SENTENCES, *, group_size: int = 128) -> dict[str, float]:
    """Each linear's measured cost when it alone is quantized: 1 - mean cosine between the
    embeddings of `sentences` with that linear rounded to nearest (q4gsw.quantize) and every
    other linear float, and the float embeddings.

    Rounding to nearest, not the calibrated recipe: GPTQ fits its weights to the calibration
    sentences, so its error measured on them understates the error on other text (choosing by
    GPTQ's own errors gave 0.989 on the demo sentences at budget 1.5, by these 0.990).
    Each run starts from the float hidden states at the linear's layer (cached), so the 36
    runs cost 21 layer-forwards per linear position rather than 36 whole forwards.
    """
    tokens = model.tokenize(list(sentences))
    t = model.tensors

    def matmul(x, w, b):  # one 2-D GEMM (numpy loops over a 3-D x's sentences otherwise)
        return (x.reshape(-1, x.shape[-1]) @ w.T + b).astype(np.float32).reshape(*x.shape[:-1], w.shape[0])

    def float_lin(name, x):
        return matmul(x, t[name + ".weight"], t[name + ".bias"])

    hidden = [model.embed(tokens)]
    for i in range(model.config.layers):
        hidden.append(model.layer(i, hidden[-1], tokens, float_lin))
    e_float = model.pool(hidden[-1], tokens.mask)
    out = {}
    for name in model.linear_names:
        i = int(name.split(".")[2])
        w_q = quantize(t[name + ".weight"], group_size).dequantize().astype(np.float32)

        def lin(n, x, name=name, w_q=w_q):
            return matmul(x, w_q, t[n + ".bias"]) if n == name else float_lin(n, x)

        h = model.layer(i, hidden[i], tokens, lin)
        for j in range(i + 1, model.config.layers):
            h = model.layer(j, h, tokens, float_lin)
        out[name] = float(1.0 - cosines(model.pool(h, tokens.mask), e_float).mean())
    return out


def choose_dense_linears(model, budget: float, *, group_size: int = 128, dtype: str = "float16",
                         sentences=SENSITIVITY_SENTENCES) -> list[str]:
    """The linears to keep dense so that the 36 linear weights take at most `budget` times the
    bytes of all 36 in int4: measured sensitivities (linear_sensitivities) as gains, the bytes
    a dense copy adds as costs, solved exactly (q4gsw.mixed.choose_dense).

    Args:
        budget: >= 1.0 (1.0: nothing dense).
    Returns:
        linear names, in model order.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 1.0:
        raise ValueError(f"dense_budget: expected a number >= 1.0 (times the all-int4 bytes), got {budget!r}")
    shapes = {n: model.tensors[n + ".weight"].shape for n in model.linear_names}
    all_int4 = sum(int4_bytes(*shape, group_size) for shape in shapes.values())
    extra = {n: dense_bytes(*shape, dtype) - int4_bytes(*shape, group_size) for n, shape in shapes.items()}
    allowed = int((budget - 1.0) * all_int4)
    if allowed < min(extra.values()):
        return []
    return choose_dense(linear_sensitivities(model, sentences, group_size=group_size), extra, allowed)
