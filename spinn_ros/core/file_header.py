"""The header every versioned JSON file of the package starts with (profiles, calibrations):
its format marker, its version, the keys it must have and the model it was made for."""
from __future__ import annotations

from typing import Callable, NoReturn, Sequence


def check_header(data, fail: Callable[[str], NoReturn], *, fmt: str, version: int, kind: str,
                 required: Sequence[str], expected_model_id: str | None, remedy: str,
                 version_remedy: str = "") -> None:
    """``fail(message)`` (which raises the caller's error, naming the file) at the first problem.
    ``kind``: what the file is ("profile"); ``remedy``: how to make a matching one, said when the
    model differs (and, with ``version_remedy``, when the version does)."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        fail(f"not a spinn {kind} (no format={fmt!r} marker)")
    if data.get("version") != version:
        fail(f"version {data.get('version')!r}, this code reads version {version}{version_remedy}")
    missing = [k for k in required if k not in data]
    if missing:
        fail(f"missing {', '.join(missing)}")
    if expected_model_id is not None and data["model_id"] != expected_model_id:
        fail(f"made for model {data['model_id']}, but the loaded model is {expected_model_id} ({remedy})")
