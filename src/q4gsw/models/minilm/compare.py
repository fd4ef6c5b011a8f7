"""Comparisons of embeddings used by the demo and the tests, and the sentence-transformers reference."""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import os

import numpy as np

from .files import model_file

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
