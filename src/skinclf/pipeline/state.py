"""The manifest of a `skinclf run` output folder (OUT/run_state.json) and the fingerprints in it.

A step's fingerprint hashes its settings, a digest of each input (a file's sha256; a folder's
list of files with the sha256 of each, so a copy with new modification times is the same
input) and the fingerprints of the steps it needs. The manifest records, per step, whether it
started or finished, under which fingerprint (and its parts, to say what changed), the outputs
it wrote and how long it took. It is written atomically (skinclf.atomic) after the step's
outputs, so it never claims an output that a kill left unwritten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from skinclf import atomic
from skinclf.contracts.run_folder import STATE_FILE
from skinclf.digests import file_sha256, folder_sha256
from skinclf.errors import ConfigError

STATE_VERSION = 1
MISSING = "missing"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return "sha256:" + file_sha256(path)


def folder_digest(root: Path) -> str:
    """sha256 of every file's relative path and bytes under `root`."""
    return "content:" + folder_sha256(root)


def digest(path: Path) -> str:
    """A file's or a folder's digest; "missing" for neither."""
    path = Path(path)
    if path.is_dir():
        return folder_digest(path)
    if path.is_file():
        return file_digest(path)
    return MISSING


@dataclass
class Fingerprint:
    """What a step's result depends on, and its hash."""

    settings: dict[str, Any]
    inputs: dict[str, str]  # path -> digest
    needs: dict[str, str]  # step name -> fingerprint

    @property
    def value(self) -> str:
        text = json.dumps(
            {"settings": self.settings, "inputs": self.inputs, "needs": self.needs},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def parts(self) -> dict[str, Any]:
        return {"settings": self.settings, "inputs": self.inputs, "needs": self.needs}


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def what_changed(old: dict[str, Any], new: Fingerprint) -> str:
    """The first difference between a recorded fingerprint's parts and `new`, in words."""
    old_settings = old.get("settings", {})
    for key, value in new.settings.items():
        if old_settings.get(key, MISSING) != value:
            before = _show(old_settings[key]) if key in old_settings else "unset"
            return f"setting {key} changed ({before} -> {_show(value)})"
    for key in old_settings:
        if key not in new.settings:
            return f"setting {key} was dropped"
    old_inputs = old.get("inputs", {})
    for path, value in new.inputs.items():
        if old_inputs.get(path) != value:
            return f"input {path} {'is new' if path not in old_inputs else 'changed'}"
    for path in old_inputs:
        if path not in new.inputs:
            return f"input {path} is no longer used"
    old_needs = old.get("needs", {})
    for name, value in new.needs.items():
        if old_needs.get(name) != value:
            return f"step {name} was redone"
    return "its fingerprint changed"


class StepRecord(BaseModel):
    """One step's entry in run_state.json: whether it started or finished, under which
    fingerprint (and its parts, to say what changed), what it wrote and how long it took."""

    status: Literal["started", "done"]
    fingerprint: str = ""
    parts: dict[str, Any] = Field(default_factory=dict)
    outputs: list[str] | None = None
    seconds: float | None = None


class RunStateFile(BaseModel):
    """OUT/run_state.json as written (`version`, then each step's record by name)."""

    version: int = STATE_VERSION
    steps: dict[str, StepRecord] = Field(default_factory=dict)


@dataclass
class RunState:
    """OUT/run_state.json: per step, its record (`StepRecord`), read and written atomically."""

    path: Path
    steps: dict[str, StepRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> RunState:
        path = Path(out) / STATE_FILE
        if not path.is_file():
            return cls(path)
        try:
            steps = RunStateFile.model_validate_json(path.read_bytes()).steps
        except ValidationError:
            raise ConfigError(
                f"{path} is not a readable run state; remove it to run every step again."
            ) from None
        return cls(path, steps)

    def save(self) -> None:
        data = RunStateFile(steps=self.steps).model_dump(exclude_none=True)
        atomic.write_text(self.path, json.dumps(data, indent=2, default=str) + "\n")

    def started(self, name: str, fingerprint: Fingerprint) -> None:
        self.steps[name] = StepRecord(
            status="started", fingerprint=fingerprint.value, parts=fingerprint.parts()
        )
        self.save()

    def finished(self, name: str, outputs: list[str], seconds: float) -> None:
        record = self.steps[name]
        record.status, record.outputs, record.seconds = "done", outputs, round(seconds, 2)
        self.save()

    def keep_only(self, names: list[str]) -> None:
        """Forget the steps that are no longer part of the run (e.g. a dropped --ood set)."""
        dropped = [n for n in self.steps if n not in names]
        for name in dropped:
            del self.steps[name]
        if dropped and self.path.is_file():
            self.save()
