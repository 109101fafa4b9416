"""Synthetic covariate shift: ImageNet-C corruption families applied to decoded images.

`skinclf predict --corrupt` predicts in-distribution images (e.g. the validation split) after
one of these corruptions, so that an out-of-distribution gate can be chosen on data derived
from in-distribution images alone (`skinclf evaluate --choose-gate --shifted`). The families
and severities are those of Hendrycks & Dietterich (ICLR 2019, "Benchmarking neural network
robustness to common corruptions and perturbations") at severity 3, fixed in advance and not
tuned to any target dataset.

Each function maps one uint8 (H, W, 3) image and a numpy Generator to a uint8 image of the
same shape. `corrupt_images` applies one family per image; with `mix` the family of each
image is drawn from all of them with a seeded generator, so the result depends only on the
seed and the image order.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 0.18) -> np.ndarray:
    """Additive Gaussian noise of standard deviation `sigma` on the [0, 1] scale."""
    x = img.astype(np.float64) / 255.0
    return _to_uint8((x + rng.normal(0.0, sigma, size=x.shape)) * 255.0)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels."""
    del rng
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def contrast(img: np.ndarray, rng: np.random.Generator, factor: float = 0.3) -> np.ndarray:
    """Contrast reduced towards the image's mean by `factor`."""
    del rng
    x = img.astype(np.float64)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - mean) * factor + mean)


def _hsv_shift(img: np.ndarray, channel: int, scale: float, offset: float) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).astype(np.float64)
    hsv[..., channel] = hsv[..., channel] * scale + offset * 255.0
    return np.asarray(Image.fromarray(_to_uint8(hsv), "HSV").convert("RGB"))


def brightness(img: np.ndarray, rng: np.random.Generator, offset: float = 0.3) -> np.ndarray:
    """HSV value raised by `offset` (on the [0, 1] scale)."""
    del rng
    return _hsv_shift(img, 2, 1.0, offset)


def saturate(img: np.ndarray, rng: np.random.Generator, scale: float = 2.0) -> np.ndarray:
    """HSV saturation multiplied by `scale`."""
    del rng
    return _hsv_shift(img, 1, scale, 0.0)


def jpeg_compression(img: np.ndarray, rng: np.random.Generator, quality: int = 15) -> np.ndarray:
    """JPEG round trip at `quality`."""
    del rng
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def pixelate(img: np.ndarray, rng: np.random.Generator, factor: float = 0.5) -> np.ndarray:
    """Box-downsampled by `factor`, then enlarged back with nearest neighbours."""
    del rng
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize(
        (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BOX
    )
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}
"""ImageNet-C families at severity 3: name -> function(image, rng) -> image."""

MIX = "mix"


def parse_corruptions(text: str) -> tuple[str, ...]:
    """`mix` (every family) or comma-separated family names; ValueError naming an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == [MIX]:
        return tuple(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ValueError(
            f"unknown corruption {unknown[0] if unknown else text!r}; use {MIX} or any of "
            f"{', '.join(CORRUPTIONS)}"
        )
    return tuple(names)


def _streams(seed: int, n: int) -> tuple[np.random.Generator, list[np.random.Generator]]:
    """Independent generators: one for the families, one per image (SeedSequence.spawn)."""
    family, *images = np.random.SeedSequence(seed).spawn(n + 1)
    return np.random.default_rng(family), [np.random.default_rng(s) for s in images]


def assign_corruptions(n: int, names: Sequence[str], seed: int) -> np.ndarray:
    """The corruption family of each of `n` images: drawn uniformly from `names`, seeded."""
    rng = _streams(seed, 0)[0]
    return np.asarray(names, dtype=object)[rng.integers(0, len(names), size=n)]


def corrupt_images(
    images: np.ndarray, rows: Sequence[int] | np.ndarray, names: Sequence[str], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted copies of images[rows] as one uint8 array, the family of each row)."""
    rows = np.asarray(rows, dtype=np.int64)
    families = assign_corruptions(len(rows), names, seed)
    out = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    rngs = _streams(seed, len(rows))[1]
    for i, (row, family) in enumerate(zip(rows, families, strict=True)):
        out[i] = CORRUPTIONS[str(family)](np.ascontiguousarray(images[row]), rngs[i])
    return out, families
