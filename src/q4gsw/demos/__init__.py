"""The demos of `q4gsw demo`: quantized layers, token-by-token decoding. The core never imports them."""
