"""The runtime's GPU copies of PackedWeights and DenseWeights: uploaded once per device, split
along N to fit the binding limit, freed with the weight (or by release())."""

from __future__ import annotations

import dataclasses
import threading
import weakref

import numpy as np

from ..arith import round_up
from ..format import DenseWeight


@dataclasses.dataclass
class WeightChunk:
    """Output features [n0, n0 + n) of a weight, as GPU buffers (a DenseWeight's chunks have
    no scales: None and stride 0)."""

    n0: int
    n: int
    weights: object
    scales: object
    scale_stride: int


def compact_row_bytes(weight) -> int:
    """Bytes of one row on the GPU: ceil(K/2) (padded rows are uploaded without their padding)."""
    return (weight.in_features + 1) // 2


def fits_one_binding(weight, max_binding: int) -> bool:
    """Whether the bytes and the used scale rows (padded_N wide) each fit one binding."""
    return (weight.out_features * compact_row_bytes(weight) <= max_binding
            and 4 * weight.num_groups * weight.scales.shape[1] <= max_binding)


def features_per_chunk(weight, max_binding: int) -> int:
    """Output features per chunk: all of them when they fit one binding, else as many as
    keep a chunk's bytes and its own scale columns within the limit."""
    if fits_one_binding(weight, max_binding):
        return weight.out_features
    per_feature = max(compact_row_bytes(weight), 4 * weight.num_groups)
    return max(1, min(weight.out_features, max_binding // per_feature))


def dense_rows(weight: DenseWeight) -> np.ndarray:
    """A DenseWeight's rows as the dense kernels read them: (N, round_up(K, 4)), zero-padded past
    K (a copy only when K % 4 != 0), in the weight's own dtype."""
    w = weight.weights
    k4 = round_up(weight.in_features, 4)
    if k4 == weight.in_features:
        return w
    return np.concatenate([w, np.zeros((w.shape[0], k4 - w.shape[1]), w.dtype)], axis=1)


class WeightCache:
    """PackedWeight or DenseWeight -> its chunks on one device. Entries are keyed by the weight object (or
    by a key object given for it, see ops.linear.linear_q4gsw) and go when the key is
    garbage-collected (PackedWeight is immutable, so a copy is never stale)."""

    def __init__(self, runtime):
        self._runtime = weakref.ref(runtime)
        self._chunks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def chunks(self, weight, *, key=None) -> list[WeightChunk]:
        """The weight's chunks on the device, uploaded on first use and kept while `key`
        (default: the weight itself) lives.

        One chunk uploads ExecuTorch's bytes and scales as they are (scales keep their
        padded_N stride); larger weights are split along N, each chunk with its own rows and
        scale columns. Rows padded past ceil(K/2) bytes (ExecuTorch's inner_dim_padding) are
        uploaded without the padding: a host copy of the N * ceil(K/2) bytes, made once per
        device, so that every kernel reads rows of ceil(K/2) bytes.
        """
        key = weight if key is None else key
        with self._lock:
            cached = self._chunks.get(key)
            if cached is None:
                cached = self._chunks[key] = self._upload(weight)
            return cached

    def release(self, key) -> None:
        """Free the GPU buffers kept for key (a weight) now (they are also freed with it)."""
        with self._lock:
            chunks = self._chunks.pop(key, [])
        for c in chunks:
            self._runtime().buffers.destroy(c.weights, c.scales)

    def __len__(self) -> int:
        return len(self._chunks)

    def _upload(self, weight) -> list[WeightChunk]:
        if isinstance(weight, DenseWeight):
            return self._upload_dense(weight)
        runtime = self._runtime()
        usage = runtime.wgpu.BufferUsage.STORAGE
        limit = runtime.caps.max_binding_size
        as_is = fits_one_binding(weight, limit)
        step = features_per_chunk(weight, limit)
        rows = weight.weights[:, : compact_row_bytes(weight)]  # a view; upload() copies it when padded
        chunks = []
        for n0 in range(0, weight.out_features, step):
            n = min(step, weight.out_features - n0)
            if as_is:
                scales, stride = weight.scales[: weight.num_groups], weight.scales.shape[1]
            else:
                scales, stride = np.ascontiguousarray(weight.scales[: weight.num_groups, n0 : n0 + n]), n
            chunks.append(WeightChunk(
                n0, n,
                runtime.buffers.upload(rows[n0 : n0 + n], usage, f"q4gsw/weights[{n0}:{n0 + n}]"),
                runtime.buffers.upload(scales, usage, f"q4gsw/scales[{n0}:{n0 + n}]", align=16),  # read as vec4
                stride,
            ))
        return chunks

    def _upload_dense(self, weight: DenseWeight) -> list[WeightChunk]:
        """Rows zero-padded to a multiple of 4 elements (dense_rows), split along N so that a
        chunk fits one binding."""
        runtime = self._runtime()
        rows = dense_rows(weight)
        step = max(1, min(weight.out_features, runtime.caps.max_binding_size // rows[0].nbytes))
        usage = runtime.wgpu.BufferUsage.STORAGE
        return [WeightChunk(n0, min(step, weight.out_features - n0),
                            runtime.buffers.upload(rows[n0 : n0 + step], usage, f"q4gsw/dense[{n0}:{n0 + step}]",
                                                   align=16),
                            None, 0)
                for n0 in range(0, weight.out_features, step)]


class ObjectKeys:
    """A key object per tuple of the caller's objects (ExecuTorch's weight tensors, a raw dense
    array) and settings, alive while the first object is: the runtime keeps a GPU copy under
    the key, so repeated calls on the same objects upload them once, and the copy goes when the
    first object is garbage-collected. Only weak references to the objects are held (keyed by
    id: ndarrays are not hashable)."""

    def __init__(self):
        self._entries: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def key(self, objects: tuple, settings: tuple = ()) -> object | None:
        """The key of (objects, settings), made on first use; None when an object cannot be
        weakly referenced (the caller's own weight object is the key then)."""
        ident = (*map(id, objects), *settings)
        with self._lock:
            hit = self._entries.get(ident)
            if hit is not None and all(ref() is obj for ref, obj in zip(hit[0], objects)):
                return hit[1]
            try:
                refs = (weakref.ref(objects[0], lambda _, ident=ident: self._drop(ident)),
                        *(weakref.ref(obj) for obj in objects[1:]))
            except TypeError:
                return None
            token = _ObjectsKey()
            self._entries[ident] = (refs, token)
            return token

    def _drop(self, ident) -> None:
        with self._lock:
            self._entries.pop(ident, None)

    def __len__(self) -> int:
        return len(self._entries)


class _ObjectsKey:
    """The runtime's key for one tuple of caller objects (see ObjectKeys)."""
