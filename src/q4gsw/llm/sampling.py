"""Sampling settings of CausalLM.generate: checked once, packed for sample.wgsl."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..checks import describe
from ..errors import ArgumentError


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy (temperature 0), or drawn from softmax(logits /
    temperature) restricted to the top_k largest logits and then to the smallest set holding
    top_p of the probability (transformers' TopK and TopP warpers), with a seed."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no restriction
    top_p: float = 1.0  # 1: no restriction
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def words(self) -> np.ndarray:
        """sample.wgsl's uniform Sampling {temperature, top_k, top_p, seed} as 4 u32 words."""
        words = np.zeros(4, np.uint32)
        words[0] = np.float32(self.temperature).view(np.uint32)
        words[1] = self.top_k if self.top_k else 0xFFFFFFFF
        words[2] = np.float32(self.top_p).view(np.uint32)
        words[3] = self.seed & 0xFFFFFFFF
        return words


def sampling(fn: str, temperature, top_k, top_p, seed, vocab: int) -> Sampling:
    """A checked Sampling (ArgumentError naming the bad argument). seed None: a fresh random one."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature >= 0):
        raise ArgumentError(fn, "temperature", "a finite float >= 0 (0: greedy)", describe(temperature))
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ArgumentError(fn, "top_k", "None or an int >= 1", describe(top_k))
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ArgumentError(fn, "top_p", "None or a float in (0, 1]", describe(top_p))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ArgumentError(fn, "seed", "None or an int >= 0", describe(seed))
    if temperature == 0 and (top_k is not None or top_p is not None or seed is not None):
        raise ArgumentError(fn, "temperature", "> 0 when top_k, top_p or seed is given (0 is greedy)",
                            repr(temperature))
    if seed is None:
        seed = int(np.random.default_rng().integers(1 << 32))
    k = 0 if top_k is None or top_k >= vocab else top_k
    return Sampling(float(temperature), k, 1.0 if top_p is None else float(top_p), seed)
