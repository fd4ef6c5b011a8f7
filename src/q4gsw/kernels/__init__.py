"""The linear_q4gsw kernels: WGSL files, their specs (problem -> decisions), the cost model
and the pure choice among them."""

from .decode import Decode, DecodeBatch
from .general import General, Rowwise
from .problem import Problem, tuning_bucket
from .select import KERNELS, select
from .spec import LLVMPIPE_LOOP_BUDGET, KernelSpec
from .tiled import Tiled, TiledSplit

__all__ = ["Decode", "DecodeBatch", "General", "KERNELS", "KernelSpec", "LLVMPIPE_LOOP_BUDGET", "Problem",
           "Rowwise", "Tiled", "TiledSplit", "select", "tuning_bucket"]
