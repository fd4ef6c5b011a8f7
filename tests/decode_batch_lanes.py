"""Run by tests/test_ops_linear.py in a subprocess with LP_NATIVE_VECTOR_WIDTH set, so that
llvmpipe runs subgroups of 4, 8 or 16 invocations: decode_batch against the float64
reference under that subgroup size. Prints one JSON line: the subgroup size the runtime
probed and, per case, the worst error relative to the test tolerance.
"""

from __future__ import annotations

import json

import numpy as np

import q4gsw
from q4gsw.kernels import DecodeBatch, Problem
from q4gsw.runtime import get_runtime

from tests.utils import random_problem, tolerance


def main():
    rt = get_runtime()
    rng = np.random.default_rng(5)
    results = []
    for m, n, k, gs, rows in [(2, 37, 256, 32, 8), (3, 20, 520, 40, 16), (8, 33, 1024, 128, 32),
                              (11, 9, 64, 8, 4), (4, 130, 2048, 64, 16)]:
        case = random_problem(rng, m, n, k, gs)
        spec = DecodeBatch(rows).bind(rt.caps)
        assert spec.supports(Problem(m, n, k, gs, True), rt.caps) is None
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        ref = q4gsw.linear_reference(case.x, case.pw, case.bias)
        worst = float(np.max(np.abs(y - ref) / tolerance(case.x, case.pw, case.bias))) if np.isfinite(y).all() else None
        results.append({"case": [m, n, k, gs, rows], "worst_over_tolerance": worst})
    # the subgroup size the runtime probed when it made the device (Capabilities.subgroup_min_size)
    print(json.dumps({"subgroup_size": rt.caps.subgroup_min_size, "results": results}))


if __name__ == "__main__":
    main()
