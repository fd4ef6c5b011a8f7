"""The linear_q4gsw kernels: WGSL files, their specs (problem -> decisions), the cost model
and the pure choice among them (f32 activations, or int8 ones: kernels/int8.py)."""

from .decode import Decode, DecodeBatch, DecodeNarrow
from .decode_int8 import DecodeInt8
from .general import General, Rowwise
from .int8 import TiledInt8
from .problem import Problem, tuning_bucket
from .select import INT8_KERNELS, KERNELS, REGISTRIES, TILED_PRESETS, check_activations, select
from .spec import LLVMPIPE_LOOP_BUDGET, KernelSpec
from .tiled import Tiled, TiledSplit

__all__ = ["Decode", "DecodeBatch", "DecodeInt8", "DecodeNarrow", "General", "INT8_KERNELS", "KERNELS", "KernelSpec", "LLVMPIPE_LOOP_BUDGET",
           "Problem", "REGISTRIES", "Rowwise", "TILED_PRESETS", "Tiled", "TiledInt8", "TiledSplit",
           "check_activations", "select", "tuning_bucket"]
