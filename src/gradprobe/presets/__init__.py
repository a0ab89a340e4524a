"""The shipped presets (classic experiments as YAML files) and reading an experiment's raw mapping.

Kept free of torch and pydantic so that ``gradprobe presets`` starts quickly.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gradprobe.errors import GradprobeError

__all__ = ["preset_names", "read_source"]


def preset_names() -> list[str]:
    """Names of the presets shipped with gradprobe."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def read_source(source: str) -> dict[str, Any]:
    """The raw mapping of a preset name or a YAML/JSON file path (YAML is loaded safely)."""
    path = Path(source)
    if source in preset_names():
        text = resources.files(__name__).joinpath(f"{source}.yaml").read_text()
        origin = f"preset {source}"
    elif path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        text, origin = path.read_text(), str(path)
    else:
        hint = difflib.get_close_matches(source, preset_names(), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise GradprobeError(
            f"experiment: {source!r} is neither a preset nor a .yaml/.json file; "
            f"presets: {', '.join(preset_names())}{extra}"
        )
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GradprobeError(f"{origin}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise GradprobeError(f"{origin}: the top level must be a mapping of settings, got {type(raw).__name__}")
    return raw
