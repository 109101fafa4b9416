"""Frozen-backbone feature cache: pooled features computed once per backbone, weights,
resolution, normalisation and images, then reused (stage 1 trains the head on them in seconds).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from skinclf.atomic import atomic_path
from skinclf.faults import fault_point
from skinclf.inference.batch import InferenceSettings, infer


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).numpy().tobytes())
    return h.hexdigest()[:16]


def backbone_key(model: torch.nn.Module) -> dict[str, object]:
    """What a frozen-backbone cache depends on in a `SkinClassifier`: the backbone's weights and
    the input normalisation, not the head (runs differing only in their head or seed share it)."""
    key: dict[str, object] = {
        "weights": weights_fingerprint(model.backbone),
        "normalize": (model.mean.flatten().tolist(), model.std.flatten().tolist()),
    }
    spec = getattr(model, "spec", None) or getattr(getattr(model, "classifier", None), "spec", None)
    color = getattr(spec, "color_constancy", "none")
    if color != "none":  # (absent otherwise: the caches of earlier runs stay valid)
        key["color_constancy"] = color
    return key


def images_key(backbone: str, images) -> dict[str, object]:
    """What a feature or activation cache depends on besides the weights and the rows: the
    backbone name and the decoded images (`data.cache.DecodedImages`: decode key, size)."""
    return {"backbone": backbone, "decode": images.key, "size": images.size}


def cache_file(cache_dir: Path, kind: str, parts: dict[str, object], rows: np.ndarray) -> Path:
    """`cache_dir/kind/<hash>.npy` for a cache entry keyed by `parts` and the image rows."""
    h = hashlib.sha256(repr(sorted(parts.items())).encode())
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    folder = Path(cache_dir) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{h.hexdigest()[:24]}.npy"


def load_cached(path: Path, mmap_mode: str | None = None) -> np.ndarray | None:
    """The array of a finished cache file, or None when there is none or it cannot be read
    (damaged, e.g. truncated by a power cut: the caller builds it again and replaces it)."""
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError):
        return None


def cached_features(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    key_parts: dict[str, object],
    cache_dir: Path,
    settings: InferenceSettings = InferenceSettings(),
    progress: bool = True,
    stages: bool = False,
) -> np.ndarray:
    """Pooled features of `images[rows]` from `model.features`, cached under `cache_dir/features`;
    `stages`: what the feature scores read instead (`Inference.score_features`: the pooled
    features, then each stage's pooled output), under `cache_dir/score_features`. Computed with
    the precision, batch size and TTA of `settings` (`infer`).

    The key covers the backbone's weights and the normalisation (`backbone_key`), `key_parts`
    (the decode cache key, resolution, ...), the precision, the TTA (other than none) and the
    rows; written atomically under a lock.
    """
    parts = dict(key_parts, **backbone_key(model), precision=settings.precision)
    if settings.tta != "none":  # (absent otherwise: the caches of earlier runs stay valid)
        parts["tta"] = settings.tta
    final = cache_file(cache_dir, "score_features" if stages else "features", parts, rows)
    with FileLock(str(final) + ".lock"):
        done = load_cached(final)
        if done is not None:
            return done
        result = infer(
            model, images, rows, settings, progress=progress, description="features", stages=stages
        )
        feats = result.score_features.astype(np.float32)
        with atomic_path(final) as tmp, open(tmp, "wb") as fh:
            np.save(fh, feats)  # a file object: np.save would append .npy to a name
            fh.flush()
            fault_point("feature-cache")
        return feats
