"""The one exception type for bad user input: a single line that names what, the value and what is allowed."""

from __future__ import annotations


class GradprobeError(ValueError):
    """Bad input (config, option, data file); the CLI prints it as one line and exits with code 2."""
