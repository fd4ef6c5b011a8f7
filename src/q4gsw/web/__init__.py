"""Static browser bundles: the kernels, packed weights (one layer each, or a whole decoder) and
an ES module runtime for navigator.gpu."""

from .export import WebLayer, bundle_kernel_source, export_web, random_layer
from .export_minilm import export_minilm_web
from .export_model import export_model_web

__all__ = ["WebLayer", "bundle_kernel_source", "export_minilm_web", "export_model_web", "export_web", "random_layer"]
