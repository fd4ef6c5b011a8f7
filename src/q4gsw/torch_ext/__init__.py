"""PyTorch integration (optional; needs the `torch` extra): Q4Linear, DenseLinear, quantize_model
and the q4gsw::linear_q4gsw, q4gsw::linear_dq8ca_q4gsw and q4gsw::dense_linear ops.

Importing this package registers the custom ops `torch.ops.q4gsw.linear_q4gsw`,
`torch.ops.q4gsw.linear_dq8ca_q4gsw` and `torch.ops.q4gsw.dense_linear`. The core package never
imports it, so `import q4gsw` does not import torch.
"""

from .api import LayerRecord, QuantizeSummary, quantize_model
from .module import DenseLinear, Q4Linear
from .ops import dense_linear_op, linear_dq8ca_q4gsw_op, linear_q4gsw_op

__all__ = ["DenseLinear", "LayerRecord", "Q4Linear", "QuantizeSummary", "dense_linear_op", "linear_dq8ca_q4gsw_op",
           "linear_q4gsw_op", "quantize_model"]
