"""Real payload samples kept as JSON under `tests/payloads/`: one per envelope, plus awkward keys.

Pure helpers (no Django), so any test module can use them: `load_payload("s3_put")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAYLOAD_DIR = Path(__file__).resolve().parent / "payloads"


def payload_path(name: str) -> Path:
    """The file of a sample, by name with or without `.json`; a clear error if it is missing."""
    path = PAYLOAD_DIR / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        known = ", ".join(payload_names())
        raise FileNotFoundError(f"no payload sample {name!r} in {PAYLOAD_DIR}; known: {known}")
    return path


def payload_text(name: str) -> str:
    """The sample exactly as stored (what an SQS body or a Lambda event would carry)."""
    return payload_path(name).read_text(encoding="utf-8")


def load_payload(name: str) -> dict[str, Any]:
    """The sample decoded from JSON into a fresh dict (safe to mutate in a test)."""
    return json.loads(payload_text(name))


def payload_names() -> list[str]:
    """Every sample's name, sorted (for parametrizing over all of them)."""
    return sorted(path.stem for path in PAYLOAD_DIR.glob("*.json"))
