"""PyTorch integration (optional; needs the `torch` extra): Q4Linear, quantize_model and the
q4gsw::linear_q4gsw / q4gsw::linear_dq8ca_q4gsw ops.

Importing this package registers the custom ops `torch.ops.q4gsw.linear_q4gsw` and
`torch.ops.q4gsw.linear_dq8ca_q4gsw`. The core package never imports it, so `import q4gsw`
does not import torch.
"""

from .api import LayerRecord, QuantizeSummary, quantize_model
from .module import Q4Linear
from .ops import linear_dq8ca_q4gsw_op, linear_q4gsw_op

__all__ = ["LayerRecord", "Q4Linear", "QuantizeSummary", "linear_dq8ca_q4gsw_op", "linear_q4gsw_op", "quantize_model"]
