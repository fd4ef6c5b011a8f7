"""PackedWeight: ExecuTorch's linear_q4gsw weight format, int4 packing, and the float64 reference;
DenseWeight: a linear kept in high precision (fp32 or fp16) beside them."""

from __future__ import annotations

import dataclasses

import numpy as np

from .arith import ceil_div
from .checks import as_array, describe, foreign_array, positive_int
from .errors import DTypeError, GroupSizeError, ShapeError, ValueRangeError

QMIN, QMAX, OFFSET = -8, 7, 8
#: Row paddings accepted besides ceil(K/2) bytes: ExecuTorch's exporter
#: (`pack_4bit_weight_tensor(w, inner_dim_padding=8)`, 8 by default) pads each row with
#: zeros to a multiple of `inner_dim_padding` elements when K is not one already.
ROW_PADDINGS = (8, 16, 32, 64)


def padded_row_bytes(k: int) -> tuple[int, ...]:
    """The row lengths in bytes a PackedWeight of K input features accepts: ceil(K/2) first,
    then K rounded up to a multiple of each of ROW_PADDINGS elements, halved (no repeats)."""
    out = [(k + 1) // 2]
    for pad in ROW_PADDINGS:
        b = ceil_div(k, pad) * pad // 2
        if b not in out:
            out.append(b)
    return tuple(out)


def pack_nibbles(u: np.ndarray) -> np.ndarray:
    """The one nibble packing: (N, K) values in [0, 15] -> (N, ceil(K/2)) uint8, byte k//2
    holding element k, even k in the low nibble, odd k in the high nibble. For odd K the last
    high nibble is padding, 8 (q = 0 in the stored q + 8 form). Values are not checked."""
    u = np.asarray(u, np.uint8)
    if u.shape[1] % 2:
        u = np.concatenate([u, np.full((u.shape[0], 1), OFFSET, np.uint8)], axis=1)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_nibbles: (N, ceil(K/2)) uint8 -> (N, K) uint8 nibbles (padding dropped)."""
    u = np.empty((packed.shape[0], 2 * packed.shape[1]), np.uint8)
    u[:, 0::2] = packed & 0x0F
    u[:, 1::2] = packed >> 4
    return u[:, :k]


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Pack signed int4 values into ExecuTorch's bytes.

    Args:
        q: (N, K) integer array with values in [-8, 7].
    Returns:
        (N, ceil(K/2)) uint8: byte k//2 holds element k, even k in the low nibble, odd k in
        the high nibble, stored as q + 8. For odd K the last high nibble is padding (8, i.e. q=0).
    """
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype.kind not in "iu":
        raise DTypeError("pack_int4", "q", "2-D integer array", describe(q))
    if q.size and (q.min() < QMIN or q.max() > QMAX):
        raise ValueRangeError("pack_int4", "q", f"values in [{QMIN}, {QMAX}]", f"range [{q.min()}, {q.max()}]")
    return pack_nibbles((q.astype(np.int16) + OFFSET).astype(np.uint8))


def unpack_int4(weights: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_int4.

    Args:
        weights: (N, ceil(K/2)) uint8.
        k: K, the number of int4 elements per row (the padding nibble of odd K is dropped).
    Returns:
        (N, K) int8 with values in [-8, 7].
    """
    weights = as_array("unpack_int4", "weights", weights, np.uint8, ndim=2)
    k = positive_int("unpack_int4", "k", k, error=ShapeError)
    if weights.shape[1] != (k + 1) // 2:
        raise ShapeError("unpack_int4", "weights", f"{(k + 1) // 2} bytes per row for K={k}", describe(weights))
    return unpack_nibbles(weights, k).astype(np.int8) - OFFSET


@dataclasses.dataclass(frozen=True, eq=False)
class PackedWeight:
    """A 4-bit groupwise-symmetric weight, exactly as ExecuTorch serializes it.

    Attributes:
        weights: (N, row_bytes) uint8, row n = output feature n, element k in byte k//2
            (even k low nibble, odd k high nibble), stored value q + 8 with q in [-8, 7].
            row_bytes is ceil(K/2), or (with in_features given) K rounded up to a multiple
            of 8, 16, 32 or 64 elements, halved: the rows ExecuTorch's exporter writes with
            `inner_dim_padding` (see ROW_PADDINGS). Bytes past ceil(K/2) are ignored.
        scales: (num_groups, padded_N) float32, num_groups >= ceil(K/group_size),
            padded_N >= N; element (k, n) uses scales[k // group_size, n].
        group_size: elements of K per scale.
        in_features: K. Defaults to 2 * weights.shape[1]; pass it for odd K.

    The arrays are kept as given (read-only views, no copy when already contiguous). The
    runtime keeps one GPU copy per device while this object lives (q4gsw.runtime.weights);
    padded rows are uploaded without their padding (see compact()), so every kernel reads
    rows of exactly ceil(K/2) bytes.
    """

    weights: np.ndarray
    scales: np.ndarray
    group_size: int
    in_features: int | None = None

    def __post_init__(self):
        fn = "PackedWeight"
        # shapes first, on the arrays as given: a copy of a broadcast view could be huge
        weights = as_array(fn, "weights", self.weights, np.uint8, ndim=2, contiguous=False)
        scales = as_array(fn, "weight_scales", self.scales, np.float32, ndim=2, contiguous=False)
        gs = positive_int(fn, "group_size", self.group_size)
        n, kb = weights.shape
        k = 2 * kb if self.in_features is None else positive_int(fn, "in_features", self.in_features, ShapeError)
        accepted = padded_row_bytes(k)
        if kb not in accepted:
            padded = ", ".join(str(b) for b in accepted[1:])
            raise ShapeError(fn, "weights", f"ceil(K/2) = {accepted[0]} bytes per row for K={k}"
                             + (f" (or {padded}: rows padded to a multiple of {'/'.join(map(str, ROW_PADDINGS))} "
                                "elements, as ExecuTorch's exporter writes them)" if padded else ""),
                             describe(weights))
        if n == 0 or kb == 0:
            raise ShapeError(fn, "weights", "N >= 1 rows and K >= 1", describe(weights))
        groups = ceil_div(k, gs)
        if scales.shape[0] < groups:
            raise GroupSizeError(
                fn, "weight_scales", f"at least ceil(K/group_size) = ceil({k}/{gs}) = {groups} rows", describe(scales)
            )
        if scales.shape[1] < n:
            raise ShapeError(fn, "weight_scales", f"padded_N >= N = {n} columns", describe(scales))
        for name, arr in (("weights", weights), ("scales", scales)):
            view = np.ascontiguousarray(arr).view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)
        object.__setattr__(self, "group_size", gs)
        object.__setattr__(self, "in_features", k)

    @property
    def out_features(self) -> int:
        """N, the number of output features."""
        return self.weights.shape[0]

    @property
    def row_bytes(self) -> int:
        """Bytes of one row as stored: ceil(K/2), or more when the rows are padded."""
        return self.weights.shape[1]

    @property
    def padded(self) -> bool:
        """Whether the rows hold padding past ceil(K/2) bytes (ExecuTorch's inner_dim_padding)."""
        return self.row_bytes != (self.in_features + 1) // 2

    def compact(self) -> "PackedWeight":
        """This weight with rows of exactly ceil(K/2) bytes: itself when not padded, else a
        copy of the bytes without the padding (N * ceil(K/2) bytes; the scales are shared)."""
        if not self.padded:
            return self
        rows = np.ascontiguousarray(self.weights[:, : (self.in_features + 1) // 2])
        return PackedWeight(rows, self.scales, self.group_size, in_features=self.in_features)

    @property
    def num_groups(self) -> int:
        """ceil(K / group_size): the scale rows that are used."""
        return ceil_div(self.in_features, self.group_size)

    @property
    def nbytes(self) -> int:
        """Bytes a kernel must read: packed weights (ceil(K/2) a row, padding excluded) plus
        the used scales."""
        return self.out_features * ((self.in_features + 1) // 2) + 4 * self.num_groups * self.out_features

    def unpack(self) -> np.ndarray:
        """(N, K) int8 q values in [-8, 7] (row padding dropped)."""
        return unpack_nibbles(self.weights, self.in_features).astype(np.int8) - OFFSET

    def dequantize(self) -> np.ndarray:
        """(N, K) float64: q * scale."""
        n, k = self.out_features, self.in_features
        group_of_k = np.arange(k) // self.group_size
        scale_nk = self.scales[group_of_k, :n].T.astype(np.float64)
        return self.unpack().astype(np.float64) * scale_nk


#: The storage types of a DenseWeight.
DENSE_DTYPES = ("float32", "float16")


@dataclasses.dataclass(frozen=True, eq=False)
class DenseWeight:
    """A linear weight kept in high precision beside the int4 ones (mixed precision), run by
    q4gsw.dense_linear / Chain.dense_linear.

    Attributes:
        weights: (N, K) float32 or float16, row n = output feature n (nn.Linear's layout).
            Kept as given (a read-only view, no copy when contiguous); a bfloat16 torch tensor
            becomes float32 (exactly). fp16 storage works on every adapter: the kernels read
            it as pairs of halves (unpack2x16float) and compute in fp32.

    The runtime keeps one GPU copy per device while this object lives (q4gsw.runtime.weights).
    """

    weights: np.ndarray

    def __post_init__(self):
        fn = "DenseWeight"
        w = foreign_array(fn, "weights", self.weights, (*DENSE_DTYPES, "bfloat16"), ndim=2)
        if w.dtype.name not in DENSE_DTYPES:  # bfloat16 tensors arrive as float32 (exact)
            w = w.astype(np.float32)
        if w.shape[0] == 0 or w.shape[1] == 0:
            raise ShapeError(fn, "weights", "(N >= 1, K >= 1)", describe(self.weights))
        view = w.view()
        view.flags.writeable = False
        object.__setattr__(self, "weights", view)

    @classmethod
    def from_float(cls, w, dtype: str = "float16") -> "DenseWeight":
        """A float weight stored as `dtype` (float16 rounds to nearest; values past fp16's
        range raise ValueRangeError rather than becoming inf).

        Args:
            w: (N, K) float32/float16/bfloat16 ndarray or torch tensor.
            dtype: one of DENSE_DTYPES.
        """
        fn = "DenseWeight.from_float"
        if dtype not in DENSE_DTYPES:
            raise DTypeError(fn, "dtype", f"one of {DENSE_DTYPES}", repr(dtype))
        a = foreign_array(fn, "w", w, (*DENSE_DTYPES, "bfloat16"), ndim=2).astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueRangeError(fn, "w", "finite values", "NaN or Inf")
        if dtype == "float16":
            big = np.abs(a).max(initial=0.0)
            if big > np.finfo(np.float16).max:
                raise ValueRangeError(fn, "w", f"|values| <= {float(np.finfo(np.float16).max)} for float16",
                                      f"max |w| = {float(big)!r}; use dtype='float32'")
        return cls(a.astype(dtype))

    @property
    def out_features(self) -> int:
        """N, the number of output features."""
        return self.weights.shape[0]

    @property
    def in_features(self) -> int:
        """K, the number of input features."""
        return self.weights.shape[1]

    @property
    def dtype(self) -> str:
        """The storage type: "float32" or "float16"."""
        return self.weights.dtype.name

    @property
    def nbytes(self) -> int:
        """Bytes a kernel must read: N * K * 4 (float32) or 2 (float16)."""
        return self.weights.nbytes

    def dequantize(self) -> np.ndarray:
        """(N, K) float64: the stored values, exactly."""
        return self.weights.astype(np.float64)


def linear_reference(x: np.ndarray, weight: PackedWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """The float64 reference of linear_q4gsw (and of dense_linear, for a DenseWeight).

    Args:
        x: (..., K) float array.
        weight: the PackedWeight (or DenseWeight).
        bias: optional (N,) float array.
    Returns:
        (..., N) float64: x @ dequantize(weight).T (+ bias).
    """
    x64 = np.asarray(x, np.float64)
    out = x64.reshape(-1, weight.in_features) @ weight.dequantize().T
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out.reshape(*x64.shape[:-1], weight.out_features)
