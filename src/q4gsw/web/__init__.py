"""Static browser bundles: the kernels, packed weights and a JS runtime for navigator.gpu."""

from .export import WebLayer, bundle_kernel_source, export_web, random_layer

__all__ = ["WebLayer", "bundle_kernel_source", "export_web", "random_layer"]
