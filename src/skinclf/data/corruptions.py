"""Synthetic covariate shift applied to decoded images: ImageNet-C corruptions and the
photometric and optical shifts of clinical photography.

`skinclf predict --corrupt` predicts in-distribution images (e.g. the validation split) after
one of these corruptions, so that an out-of-distribution gate can be chosen on data derived
from in-distribution images alone (`skinclf evaluate --choose-gate --shifted`). Two sets of
families, each with severities fixed in advance and not tuned to any target dataset:

- `mix`: ImageNet-C (Hendrycks & Dietterich, ICLR 2019, "Benchmarking neural network
  robustness to common corruptions and perturbations") at severity 3;
- `clinical`: what a phone or a clinic camera does to a dermoscopic-looking image: colour
  temperature (white balance), exposure, defocus, phone processing (downscaling and JPEG),
  vignetting, and a wider, non-dermoscopic field of view (the lesion smaller, surrounded by skin);
- `all`: both sets.

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


def white_balance(img: np.ndarray, rng: np.random.Generator, gain: float = 0.18) -> np.ndarray:
    """Colour temperature: red up and blue down by `gain` (warm light) or the reverse (cool),
    drawn with equal probability."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    x = img.astype(np.float64) * np.array([1.0 + sign * gain, 1.0, 1.0 - sign * gain])
    return _to_uint8(x)


def exposure(img: np.ndarray, rng: np.random.Generator, gamma: float = 1.8) -> np.ndarray:
    """Under- or over-exposure (drawn with equal probability): a gamma of `gamma` or its
    inverse on the [0, 1] scale."""
    g = gamma if rng.random() < 0.5 else 1.0 / gamma
    return _to_uint8((img.astype(np.float64) / 255.0) ** g * 255.0)


def defocus(img: np.ndarray, rng: np.random.Generator, radius: float = 0.02) -> np.ndarray:
    """Out-of-focus: two box blurs of `radius` x the image side (close to a disc blur)."""
    del rng
    r = max(1, round(radius * max(img.shape[:2])))
    blurred = Image.fromarray(img).filter(ImageFilter.BoxBlur(r)).filter(ImageFilter.BoxBlur(r))
    return np.asarray(blurred)


def phone_processing(
    img: np.ndarray, rng: np.random.Generator, scale: float = 0.4, quality: int = 60
) -> np.ndarray:
    """A phone's pipeline: downscaled by `scale`, JPEG at `quality`, enlarged back (bilinear)."""
    del rng
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
    )
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(decoded.resize((w, h), Image.Resampling.BILINEAR))


def vignetting(img: np.ndarray, rng: np.random.Generator, strength: float = 0.6) -> np.ndarray:
    """Light falling off towards the corners: x (1 - `strength` r^2), r = 1 at a corner."""
    del rng
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    return _to_uint8(img.astype(np.float64) * (1.0 - strength * r2 / 2.0)[..., None])


def field_of_view(img: np.ndarray, rng: np.random.Generator, zoom: float = 0.55) -> np.ndarray:
    """A wider, non-dermoscopic view: the image shrunk to `zoom` of its side and centred on
    skin of its own border's colour (with a little texture noise)."""
    h, w = img.shape[:2]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(np.float64)
    skin = border.mean(axis=0) + rng.normal(0.0, 6.0, size=(h, w, 3))
    small = np.asarray(
        Image.fromarray(img).resize(
            (max(1, round(w * zoom)), max(1, round(h * zoom))), Image.Resampling.BILINEAR
        )
    )
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out = skin.copy()
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return _to_uint8(out)


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

CLINICAL: dict[str, Corruption] = {
    "white_balance": white_balance,
    "exposure": exposure,
    "defocus": defocus,
    "phone_processing": phone_processing,
    "vignetting": vignetting,
    "field_of_view": field_of_view,
}
"""The shifts of clinical photography, at fixed severities: name -> function(image, rng)."""

FAMILIES: dict[str, Corruption] = {**CORRUPTIONS, **CLINICAL}
MIX, CLINICAL_MIX, ALL = "mix", "clinical", "all"
SETS: dict[str, tuple[str, ...]] = {
    MIX: tuple(CORRUPTIONS),
    CLINICAL_MIX: tuple(CLINICAL),
    ALL: tuple(FAMILIES),
}


def parse_corruptions(text: str) -> tuple[str, ...]:
    """`mix` (ImageNet-C), `clinical`, `all` (both), or comma-separated family names;
    ValueError naming an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) == 1 and names[0] in SETS:
        return SETS[names[0]]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise ValueError(
            f"unknown corruption {unknown[0] if unknown else text!r}; use {', '.join(SETS)} or "
            f"any of {', '.join(FAMILIES)}"
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
        out[i] = FAMILIES[str(family)](np.ascontiguousarray(images[row]), rngs[i])
    return out, families
