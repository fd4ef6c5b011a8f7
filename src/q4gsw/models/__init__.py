"""Real models run with q4gsw linears (optional: each needs the `model` extra)."""
