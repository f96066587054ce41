"""The binary marker of emitters/vectors.json (``{"$bin": base64}``), shared by the unit tests
and driver.py."""

from __future__ import annotations

import base64
from typing import Any


def revive(v: Any) -> Any:
    """The vectors' ``{"$bin": base64}`` markers as bytes."""
    if isinstance(v, list):
        return [revive(x) for x in v]
    if isinstance(v, dict):
        if list(v) == ["$bin"]:
            return base64.b64decode(v["$bin"])
        return {k: revive(x) for k, x in v.items()}
    return v
