"""Llama-family decoders on the GPU: checkpoints in, tokens out (q4gsw.load_model)."""
