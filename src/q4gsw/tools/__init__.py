"""Tools around the core: benchmarks and their yardsticks, the tuner, plots. The core (format,
quantize, ops, kernels, runtime) never imports them."""
