"""`skinclf serve`: an exported model behind an HTTP API, with a page to try it (app.py) and
the upload size limit enforced while the body streams in (limits.py).

Importing this package imports no web framework: `require_serve_extra()` first names the
extra to install when FastAPI, uvicorn or python-multipart is missing.
"""

from __future__ import annotations

import importlib.util

from skinclf.errors import MissingExtraError
from skinclf.extras import require_extra

# The `serve` extra of pyproject.toml: pip package -> module. extras.py knows an extra by any
# one of its modules (FastAPI here); the others are checked below.
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python-multipart": "multipart"}


def require_serve_extra() -> None:
    """MissingExtraError naming `pip install "skinclf[serve]"` when a package is missing."""
    require_extra("serve", "skinclf serve")
    missing = [
        p for p, module in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise MissingExtraError(
            f"skinclf serve needs the optional package {missing[0]}, which is not installed; "
            f'install it with pip install "skinclf[serve]" (or pip install {missing[0]}) and '
            "run again."
        )
