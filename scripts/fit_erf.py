"""Fit the erf polynomials of src/q4gsw/kernels/gelu.wgsl and report their float32 error.

    python scripts/fit_erf.py

|z| < SPLIT: erf(z) = z * P(z^2), P of degree 6 fitted for relative error (least squares on
Chebyshev-spaced points). |z| >= SPLIT: erfc(t) = exp(Q(t) - t^2), Q of degree 8 fitted to
log(erfc(t)) + t^2 on [SPLIT, 4]. Prints the float32 coefficients (highest degree first, as
the kernel's Horner steps use them) and the max |erf error| of a float32 Horner evaluation.
"""

import math

import numpy as np

SPLIT = 0.921875
HIGH = 4.0


def chebyshev_points(lo: float, hi: float, n: int) -> np.ndarray:
    return (np.cos(np.linspace(0, np.pi, n)) + 1) / 2 * (hi - lo) + lo


def horner32(coefficients, x):
    """Evaluate sum c[i] x^i in float32, highest degree first (the kernel's order)."""
    x = np.asarray(x, np.float32)
    r = np.full_like(x, np.float32(coefficients[-1]))
    for c in coefficients[-2::-1]:
        r = (r * x + np.float32(c)).astype(np.float32)
    return r


def main() -> None:
    erf = np.vectorize(math.erf)
    erfc = np.vectorize(math.erfc)
    s = chebyshev_points(0, SPLIT * SPLIT, 4000)
    z = np.sqrt(np.maximum(s, 1e-18))
    target = erf(z) / z
    p, *_ = np.linalg.lstsq(np.vander(s, 7, increasing=True) / target[:, None], np.ones_like(s), rcond=None)
    t = chebyshev_points(SPLIT, HIGH, 6000)
    q, *_ = np.linalg.lstsq(np.vander(t, 9, increasing=True), np.log(erfc(t)) + t * t, rcond=None)
    p, q = p.astype(np.float32), q.astype(np.float32)
    print("P (z^2), highest first:", ", ".join(f"{c:.9g}" for c in p[::-1]))
    print("Q (t), highest first:  ", ", ".join(f"{c:.9g}" for c in q[::-1]))
    zs = np.linspace(0, SPLIT, 200001, dtype=np.float32)
    small = zs * horner32(p, zs * zs)
    print(f"max |erf error|, |z| < {SPLIT}: {np.abs(small - erf(zs.astype(np.float64))).max():.2e}")
    ts = np.linspace(SPLIT, HIGH, 200001, dtype=np.float32)
    large = np.float32(1) - np.exp(horner32(q, ts) - ts * ts).astype(np.float32)
    print(f"max |erf error|, {SPLIT} <= |z| < {HIGH}: {np.abs(large - erf(ts.astype(np.float64))).max():.2e}")
    print(f"erfc({HIGH}) = {math.erfc(HIGH):.2e} (the kernel's erf is +-1 from there)")


if __name__ == "__main__":
    main()
