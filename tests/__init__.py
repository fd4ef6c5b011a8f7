"""The q4gsw test suite (a package, so modules share helpers through relative imports)."""
