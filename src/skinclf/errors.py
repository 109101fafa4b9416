"""Errors meant for the user: one clear sentence, shown without a traceback by the CLI."""

from __future__ import annotations


class SkinclfError(Exception):
    """Bad input or a failed precondition, explained in one sentence for the user."""


class DataError(SkinclfError):
    """A dataset, split or predictions file that cannot be used as it is."""


class ConfigError(SkinclfError):
    """An unknown preset, config key, or a value out of range."""


class MissingExtraError(SkinclfError):
    """An optional dependency (a pip extra of skinclf) that a requested feature needs."""


def first_schema_error(exc, *within: str) -> str:
    """A pydantic ValidationError's first error as `where.it.is: what is wrong` (`within`: the
    keys above the validated part, e.g. "fit"), for a one-sentence message."""
    err = exc.errors()[0]
    return f"{'.'.join([*within, *map(str, err['loc'])])}: {err['msg']}"
