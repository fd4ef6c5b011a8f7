"""WGSL kernels (the .wgsl files beside this) and the pure choice among them (registry)."""
