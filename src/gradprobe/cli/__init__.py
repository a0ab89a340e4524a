"""Command-line interface: parse, validate, delegate; no logic of its own."""
