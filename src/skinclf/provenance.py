"""What produced a run: versions, git commit, hardware, seed, data fingerprint."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGES = (
    "skinclf",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "torchmetrics",
    "optuna",
    "numpy",
    "pandas",
    "scikit-learn",
)


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the source tree skinclf runs from (None outside a git checkout)."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("-dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The computer, without importing torch: CPU model, logical CPUs, platform."""
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform()}


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's and each package's installed version (None where it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, object]:
    import torch

    info: dict[str, object] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def data_fingerprint(table: pd.DataFrame) -> str:
    """Hash of image ids, labels and source file sizes: changes when the data does."""
    h = hashlib.sha256()
    for row in table.sort_values("image_id").itertuples(index=False):
        try:
            size = os.path.getsize(row.path)
        except OSError:
            size = -1
        h.update(f"{row.image_id}|{row.label}|{size}\n".encode())
    return h.hexdigest()[:16]


def provenance(seed: int, table: pd.DataFrame, extra: dict[str, object] | None = None) -> dict:
    installed = versions()
    del installed["python"]
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "versions": installed,
        "git_commit": git_commit(),
        "hardware": hardware(),
        "seed": seed,
        "data_fingerprint": data_fingerprint(table),
        "n_images": int(len(table)),
        **(extra or {}),
    }
