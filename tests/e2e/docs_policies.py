"""The Content-Security-Policies docs/guides/fastapi.md gives FastAPI's docs pages, read
from the guide's ``docs_csp.py`` block: the browser tests serve and check exactly what the
guide tells readers to use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import readme

__all__ = ["REDOC_CSP", "SWAGGER_CSP"]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "fastapi.md"


def _guide_policies() -> dict[str, Any]:
    (block,) = [b for b in readme.blocks(GUIDE.read_text()) if b.file == "docs_csp.py"]
    namespace: dict[str, Any] = {}
    exec(compile(block.text, "docs_csp.py", "exec"), namespace)  # noqa: S102 - our own guide
    return namespace


_POLICIES = _guide_policies()
SWAGGER_CSP: str = _POLICIES["SWAGGER_CSP"]
REDOC_CSP: str = _POLICIES["REDOC_CSP"]
