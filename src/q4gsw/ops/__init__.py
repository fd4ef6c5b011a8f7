"""The operators: linear_q4gsw and its PackedWeight form."""
