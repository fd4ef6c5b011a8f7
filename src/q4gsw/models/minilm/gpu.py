"""GpuEncoder: all-MiniLM-L6-v2's whole forward on the GPU (MiniLM.encode(mode="gpu")).

Every op runs as a WGSL kernel, recorded once per batch shape (B sentences padded to T
tokens) into a Chain and replayed in one submit per batch; a batch reads back its (B, 384)
embeddings alone. The graph, in the order transformers' BertModel and sentence-transformers'
Pooling and Normalize run it:

    token_embeddings (word + token type + position, float32 tables) -> layer_norm
    per layer: q, k, v linears -> encoder_attention (bidirectional, padding mask) ->
               attention.output linear -> layer_norm(+ residual) -> intermediate linear ->
               gelu (exact erf) -> output linear -> layer_norm(+ residual)
    mean_pool_normalize (mean over the mask, L2)

The linears are the model's: q4gsw int4 (Chain.linear) with the recipe's biases, and the
linears the recipe keeps dense on Chain.dense_linear; embeddings, norms and biases are float32,
as in the numpy forward (model.py).
"""

from __future__ import annotations

import numpy as np

from ...chain import Chain, GpuTensor, upload
from ...errors import ShapeError
from ...runtime import get_runtime
from . import ops
from .files import Tokens

#: Chains kept, by batch shape (B, T).
CHAINS = 2


class GpuEncoder:
    """A MiniLM's weights on the GPU and its forward recorded per batch shape.

    Args:
        model: the MiniLM (its tensors, quantized linears, dense linears and biases).
        runtime: the Runtime (default: the process's).
    """

    def __init__(self, model, *, runtime=None):
        self.model = model
        self.config = c = model.config
        self.runtime = rt = runtime or get_runtime()
        t = model.tensors
        word = t["embeddings.word_embeddings.weight"]
        self.max_positions = t["embeddings.position_embeddings.weight"].shape[0]
        if c.hidden % 4 or (c.hidden // c.heads) % 4:
            raise ShapeError("GpuEncoder", "model", "hidden and head dims that are multiples of 4",
                             f"hidden {c.hidden}, {c.heads} heads")
        step = ops.rows_per_chunk(*word.shape, rt.caps.max_binding_size)
        with rt.device_calls():
            self.word = [(n0, upload(word[n0:n0 + step], runtime=rt)) for n0 in range(0, word.shape[0], step)]
            self.position = upload(t["embeddings.position_embeddings.weight"], runtime=rt)
            self.token_type = upload(t["embeddings.token_type_embeddings.weight"], runtime=rt)
            norms = ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{n}" for i in range(c.layers)
                                                for n in ("attention.output.LayerNorm", "output.LayerNorm")]
            self.norms = {n: (upload(t[n + ".weight"], runtime=rt), upload(t[n + ".bias"], runtime=rt)) for n in norms}
            self.biases = {n: upload(model.biases[n], runtime=rt) for n in model.linear_names}
        self._chains: dict[tuple[int, int], tuple] = {}

    def _linear(self, chain: Chain, name: str, x: GpuTensor) -> GpuTensor:
        m = self.model
        if name in m.dense:
            return chain.dense_linear(x, m.dense[name], self.biases[name])
        return chain.linear(x, m.packed[name], self.biases[name])

    def record(self, batch: int, seq: int):
        """The forward over `batch` sequences of `seq` tokens as one Chain.

        Returns:
            (chain, ids, type_ids, mask, embeddings): the inputs ids / type_ids ((B * T,)
            uint32) and mask ((B, T) float32) to feed, and the (B, hidden) output.
        """
        c = self.config
        if not 1 <= seq <= min(self.max_positions, ops.MAX_KEYS):
            raise ShapeError("GpuEncoder.record", "seq", f"1 .. {min(self.max_positions, ops.MAX_KEYS)} tokens",
                             repr(seq))
        chain = Chain(runtime=self.runtime, label="minilm/encode")
        ids = chain.input((batch * seq,), dtype="uint32")
        type_ids = chain.input((batch * seq,), dtype="uint32")
        mask = chain.input((batch, seq))
        eps = c.layer_norm_eps
        x = ops.token_embeddings(chain, ids, type_ids, self.word, self.position, self.token_type, seq=seq)
        h = ops.layer_norm(chain, x, None, *self.norms["embeddings.LayerNorm"], eps=eps)
        for i in range(c.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._linear(chain, p + f"attention.self.{s}", h) for s in ("query", "key", "value"))
            a = ops.encoder_attention(chain, q, k, v, mask, heads=c.heads, seq=seq)
            h = ops.layer_norm(chain, self._linear(chain, p + "attention.output.dense", a), h,
                               *self.norms[p + "attention.output.LayerNorm"], eps=eps)
            inner = ops.gelu(chain, self._linear(chain, p + "intermediate.dense", h))
            h = ops.layer_norm(chain, self._linear(chain, p + "output.dense", inner), h,
                               *self.norms[p + "output.LayerNorm"], eps=eps)
        embeddings = ops.mean_pool_normalize(chain, h, mask, seq=seq)
        return chain, ids, type_ids, mask, embeddings

    def encode(self, tokens: Tokens) -> np.ndarray:
        """(B, hidden) float32 unit-norm embeddings of a tokenized batch: one submit, one read back."""
        batch, seq = tokens.ids.shape
        with self.runtime.device_calls():
            key = (batch, seq)
            if key not in self._chains:
                while len(self._chains) >= CHAINS:
                    self._chains.pop(next(iter(self._chains)))[0].release()
                self._chains[key] = self.record(batch, seq)
            chain, ids, type_ids, mask, embeddings = self._chains[key]
            chain.run({ids: tokens.ids.reshape(-1).astype(np.uint32),
                       type_ids: tokens.type_ids.reshape(-1).astype(np.uint32),
                       mask: tokens.mask.astype(np.float32)})
            return embeddings.numpy()

    def release(self) -> None:
        """Free the chains and the tables, norms and biases on the GPU now."""
        for entry in self._chains.values():
            entry[0].release()
        self._chains.clear()
        tensors = [t for _, t in self.word] + [self.position, self.token_type] + list(self.biases.values())
        for t in tensors + [t for pair in self.norms.values() for t in pair]:
            t.release()
