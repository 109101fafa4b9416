"""Optional dependencies: each is a pip extra of skinclf (`pip install "skinclf[wandb]"`), and
a feature that needs one checks for it before it writes anything (`require_extra`)."""

from __future__ import annotations

import importlib.util

from skinclf.errors import MissingExtraError

# extra name -> the modules that provide it (any one suffices), as pyproject.toml declares them
EXTRAS: dict[str, tuple[str, ...]] = {
    "wandb": ("wandb",),
    "tensorboard": ("tensorboard", "tensorboardX"),  # Lightning's TensorBoardLogger takes either
    "serve": ("fastapi",),  # skinclf serve (uvicorn and python-multipart: serve/__init__.py)
    "postgres": ("psycopg",),  # skinclf tune --storage postgresql+psycopg://...
}


def has_extra(extra: str) -> bool:
    """Whether a module of `extra` can be imported (without importing it)."""
    for module in EXTRAS[extra]:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):  # a broken install counts as absent
            continue
    return False


def require_extra(extra: str, feature: str) -> None:
    """Raise one sentence naming the extra to install when `feature` needs a missing one."""
    if not has_extra(extra):
        module = EXTRAS[extra][0]
        raise MissingExtraError(
            f"{feature} needs the optional package {module}, which is not installed; install "
            f'it with pip install "skinclf[{extra}]" (or pip install {module}) and run again.'
        )
