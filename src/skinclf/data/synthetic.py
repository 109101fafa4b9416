"""Generated datasets in the real formats: class-dependent synthetic "lesions" on skin.

Each class has its own shape, colour and texture (plus noise, random position, scale and
hairs), so a small model learns them well above chance while no two images are identical.
`write_sample` writes a dataset with the official file names and columns of each format;
`write_broken` writes the bad-input cases `skinclf data check` must report.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from skinclf.classes import CLASSES, PAD_UFES_TO_HAM

SAMPLE_FORMATS: tuple[str, ...] = ("ham10000", "pad-ufes-20", "isic2018", "folder", "csv")
BROKEN_KINDS: tuple[str, ...] = (
    "missing-image",  # metadata row with no image file (error)
    "extra-image",  # image with no metadata row (warning only)
    "unknown-label",  # label value that is not a class (error)
    "duplicate-id",  # the same image_id on two rows (error)
    "unreadable-image",  # a file with an image extension that is not an image (error)
    "truncated-image",  # a JPEG/PNG cut short (error)
    "zero-byte-image",  # an empty image file (error)
    "missing-column",  # the metadata CSV lacks a required column (error)
    "not-a-csv",  # the metadata file is binary, not a CSV (error)
    "empty-folder",  # a folder with nothing in it (error)
    "no-such-path",  # a path that does not exist (error)
)

# Official file names.
HAM_METADATA = "HAM10000_metadata.csv"
HAM_IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
PAD_METADATA = "metadata.csv"
ISIC2018_GROUND_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
ISIC2018_IMAGE_DIR = "ISIC2018_Task3_Test_Input"
ISIC2018_COLUMNS: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
BYO_CSV = "labels.csv"
PAD_COLUMNS: tuple[str, ...] = (
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother",
    "age", "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water",
    "has_sewage_system", "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic",
    "itch", "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed",
)  # fmt: skip

# ---------------------------------------------------------------------------- drawing


# Per class: base colour (RGB 0-1), radius range (fraction of the image), boundary
# irregularity, ellipse aspect range, edge softness.
@dataclass(frozen=True)
class _Style:
    colour: tuple[float, float, float]
    radius: tuple[float, float]
    irregular: float
    aspect: tuple[float, float]
    edge: float


_STYLES: dict[str, _Style] = {
    "akiec": _Style((0.80, 0.38, 0.34), (0.26, 0.36), 0.10, (0.7, 1.0), 0.050),
    "bcc": _Style((0.88, 0.62, 0.62), (0.18, 0.27), 0.03, (0.85, 1.0), 0.015),
    "bkl": _Style((0.62, 0.46, 0.30), (0.20, 0.32), 0.07, (0.6, 0.85), 0.020),
    "df": _Style((0.55, 0.38, 0.26), (0.11, 0.18), 0.04, (0.8, 1.0), 0.030),
    "mel": _Style((0.20, 0.11, 0.08), (0.25, 0.38), 0.22, (0.7, 1.0), 0.012),
    "nv": _Style((0.45, 0.28, 0.17), (0.18, 0.30), 0.03, (0.8, 1.0), 0.020),
    "vasc": _Style((0.62, 0.08, 0.22), (0.07, 0.11), 0.02, (0.9, 1.0), 0.012),
    "scc": _Style((0.72, 0.26, 0.22), (0.20, 0.30), 0.12, (0.75, 1.0), 0.020),
}
LESION_LABELS: tuple[str, ...] = (*CLASSES, "scc")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), -1.5, 1.5)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def _blob_mask(
    rng: np.random.Generator, size: int, cx: float, cy: float, radius: float, style: _Style
) -> tuple[np.ndarray, np.ndarray]:
    """Soft mask of an irregular ellipse, and the normalised radius (0 centre, 1 edge)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    dx, dy = xx - cx, yy - cy
    angle = rng.uniform(0, np.pi)
    rx = dx * np.cos(angle) + dy * np.sin(angle)
    ry = -dx * np.sin(angle) + dy * np.cos(angle)
    aspect = rng.uniform(*style.aspect)
    r = np.sqrt(rx**2 + (ry / aspect) ** 2)
    theta = np.arctan2(ry, rx)
    boundary = np.ones_like(theta)
    for k in range(2, 7):
        boundary += rng.uniform(0, style.irregular) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    boundary *= radius
    mask = _sigmoid((boundary - r) / style.edge)
    return mask, r / np.maximum(boundary, 1e-6)


def _texture(label: str, rng: np.random.Generator, size: int, rnorm: np.ndarray) -> np.ndarray:
    """Class-specific colour texture inside the lesion (H, W, 3), added to the base colour."""
    tex = np.zeros((size, size, 3), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if label == "mel":  # variegated: blue-grey veil and black blotches
        veil = _smooth_noise(rng, size, 4)[..., None]
        tex += np.clip(veil, 0, None) * np.array([0.12, 0.20, 0.32], np.float32)
        tex -= np.clip(-_smooth_noise(rng, size, 6), 0, None)[..., None] * 0.12
    elif label == "bkl":  # cerebriform stripes
        phi = rng.uniform(0, np.pi)
        freq = rng.uniform(10, 16)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(phi) + yy * np.sin(phi)))
        wave += 0.6 * _smooth_noise(rng, size, 8)
        tex += wave[..., None] * np.array([0.10, 0.08, 0.05], np.float32)
    elif label == "bcc":  # pearly centre, thin red branching vessels
        tex += np.clip(1 - rnorm, 0, 1)[..., None] * np.array([0.08, 0.08, 0.10], np.float32)
        for _ in range(rng.integers(3, 6)):
            phi = rng.uniform(0, np.pi)
            offs = rng.uniform(0, 1)
            wiggle = 0.04 * _smooth_noise(rng, size, 3)
            d = np.abs((xx * np.cos(phi) + yy * np.sin(phi)) - offs + wiggle)
            tex += np.exp(-((d / 0.012) ** 2))[..., None] * np.array(
                [0.05, -0.40, -0.38], np.float32
            )
    elif label == "akiec":  # rough, scaly: white speckles on red
        speck = rng.random((size, size)) < 0.08
        tex += speck[..., None] * np.array([0.18, 0.40, 0.42], np.float32)
        tex += 0.06 * _smooth_noise(rng, size, 10)[..., None]
    elif label == "df":  # pale scar-like centre, brown ring
        centre = np.exp(-((rnorm / 0.45) ** 2))
        tex += centre[..., None] * np.array([0.35, 0.45, 0.50], np.float32)
    elif label == "nv":  # even pigment network
        freq = rng.uniform(14, 20)
        net = np.sin(2 * np.pi * freq * xx) * np.sin(2 * np.pi * freq * yy)
        tex += 0.04 * net[..., None]
    elif label == "scc":  # keratotic yellow-white crust in the centre, red rim
        crust = np.exp(-((rnorm / 0.55) ** 2))
        tex += crust[..., None] * np.array([0.20, 0.55, 0.48], np.float32)
        tex += 0.08 * _smooth_noise(rng, size, 12)[..., None]
    return tex


def _skin(rng: np.random.Generator, size: int) -> np.ndarray:
    tone = np.array([0.90, 0.72, 0.62], np.float32) * rng.uniform(0.82, 1.05)
    tone += rng.normal(0, 0.02, 3).astype(np.float32)
    shading = 0.05 * _smooth_noise(rng, size, 3)[..., None]
    return np.clip(tone + shading, 0, 1) * np.ones((size, size, 3), np.float32)


def _hairs(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for _ in range(rng.poisson(0.8)):
        phi = rng.uniform(0, np.pi)
        offs = rng.uniform(0.1, 0.9)
        curve = 0.05 * _smooth_noise(rng, size, 2)
        d = np.abs(xx * np.cos(phi) + yy * np.sin(phi) - offs + curve)
        line = np.exp(-((d / 0.006) ** 2))[..., None]
        img = img * (1 - 0.8 * line) + 0.08 * line
    return img


def _draw(
    label: str, shape_rng: np.random.Generator, rng: np.random.Generator, size: int
) -> Image.Image:
    """Draw one image; `shape_rng` fixes the lesion, `rng` the per-image variation."""
    if label not in _STYLES:
        raise ValueError(f"unknown lesion label {label!r}; expected one of {LESION_LABELS}")
    style = _STYLES[label]
    work = max(size, 48)  # draw at >= 48 px so thin structures survive, then resize
    img = _skin(rng, work)
    base = np.array(style.colour, np.float32) + shape_rng.normal(0, 0.03, 3).astype(np.float32)
    cx, cy = 0.5 + rng.uniform(-0.12, 0.12, 2)
    radius = shape_rng.uniform(*style.radius) * rng.uniform(0.9, 1.1)
    if label == "vasc":  # cluster of red-purple lobules
        mask = np.zeros((work, work), np.float32)
        rnorm = np.ones((work, work), np.float32)
        for _ in range(int(shape_rng.integers(3, 7))):
            ox, oy = rng.uniform(-0.12, 0.12, 2)
            m, rn = _blob_mask(rng, work, cx + ox, cy + oy, radius * rng.uniform(0.7, 1.3), style)
            mask = np.maximum(mask, m)
            rnorm = np.minimum(rnorm, rn)
    else:
        mask, rnorm = _blob_mask(shape_rng, work, cx, cy, radius, style)
    lesion = base + _texture(label, rng, work, rnorm)
    img = img * (1 - mask[..., None]) + np.clip(lesion, 0, 1) * mask[..., None]
    img = _hairs(rng, img)
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 0.025, img.shape).astype(np.float32)
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if work != size:
        out = out.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return out


def make_lesion_image(label: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One synthetic RGB image of a lesion of class `label` (a class, or "scc")."""
    return _draw(label, rng, rng, size)


def _lesion_images(
    label: str, rng: np.random.Generator, n_images: int, size: int
) -> Iterator[Image.Image]:
    """Images of one lesion: the same shape and colour, different position/noise/hairs."""
    shape_seed = int(rng.integers(2**32))
    for _ in range(n_images):
        yield _draw(label, np.random.default_rng(shape_seed), rng, size)


def _group_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split n images into lesions/patients of 1-3 images each."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.choice([1, 1, 2, 3]), n - sum(sizes))))
    return sizes


# ---------------------------------------------------------------------------- formats


def _write_csv(path: Path, header: list[str] | tuple[str, ...], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _ham10000(out: Path, n: int, rng: np.random.Generator, size: int) -> None:
    for d in HAM_IMAGE_DIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    sites = ["back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest",
             "foot", "neck", "scalp", "hand", "ear", "unknown"]  # fmt: skip
    dx_types = ["histo", "follow_up", "consensus", "confocal"]
    rows: list[list[object]] = []
    lesion_no, image_no = 1, 24306
    total = n * len(CLASSES)
    for label in CLASSES:
        for n_img in _group_sizes(rng, n):
            lesion_id = f"HAM_{lesion_no:07d}"
            lesion_no += 1
            sex = str(rng.choice(["male", "female", "unknown"], p=[0.45, 0.45, 0.1]))
            age: object = (
                "" if sex == "unknown" or rng.random() < 0.05 else float(5 * rng.integers(1, 18))
            )
            site, dx_type = str(rng.choice(sites)), str(rng.choice(dx_types))
            for img in _lesion_images(label, rng, n_img, size):
                image_id = f"ISIC_{image_no:07d}"
                part = HAM_IMAGE_DIRS[0 if len(rows) < total // 2 else 1]
                img.save(out / part / f"{image_id}.jpg", quality=90)
                rows.append([lesion_id, image_id, label, dx_type, age, sex, site])
                image_no += 1
    order = rng.permutation(len(rows))
    _write_csv(out / HAM_METADATA,
               ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
               [rows[i] for i in order])  # fmt: skip


_PAD_REGIONS = ["BACK", "FACE", "CHEST", "FOREARM", "ARM", "NECK", "THIGH", "ABDOMEN", "NOSE",
                "FOOT", "EAR", "HAND", "SCALP", "LIP"]  # fmt: skip
_PAD_ORIGINS = ["POMERANIA", "GERMANY", "ITALY", "BRAZIL", "UNK", "NETHERLANDS"]


def _pad_person(rng: np.random.Generator, sparse: bool) -> dict[str, object]:
    """A PAD-UFES-20 patient's columns (empty when `sparse`, as many real rows are)."""

    def tf() -> str:
        return str(bool(rng.random() < 0.4))

    return {
        "smoke": "" if sparse else tf(), "drink": "" if sparse else tf(),
        "background_father": "" if sparse else str(rng.choice(_PAD_ORIGINS)),
        "background_mother": "" if sparse else str(rng.choice(_PAD_ORIGINS)),
        "pesticide": "" if sparse else tf(),
        "gender": "" if sparse else str(rng.choice(["FEMALE", "MALE"])),
        "skin_cancer_history": "" if sparse else tf(),
        "cancer_history": "" if sparse else tf(),
        "has_piped_water": "" if sparse else tf(),
        "has_sewage_system": "" if sparse else tf(),
        "fitspatrick": "" if sparse else float(rng.choice([1, 2, 2, 3, 3, 4, 5, 6])),
    }  # fmt: skip


def _pad_lesion(rng: np.random.Generator, dx: str, sparse: bool) -> dict[str, object]:
    """A PAD-UFES-20 lesion's columns: region, diameters, the patient's answers, biopsy."""
    d1 = "" if sparse else float(rng.integers(3, 25))
    d2 = "" if sparse else float(max(2, int(d1) - int(rng.integers(0, 4))))
    return {
        "region": str(rng.choice(_PAD_REGIONS)), "diameter_1": d1, "diameter_2": d2,
        "itch": str(rng.choice(["True", "False", "UNK"], p=[.45, .5, .05])),
        "grew": str(rng.choice(["True", "False", "UNK"], p=[.45, .3, .25])),
        "hurt": str(rng.choice(["True", "False", "UNK"], p=[.2, .75, .05])),
        "changed": str(rng.choice(["True", "False", "UNK"], p=[.2, .6, .2])),
        "bleed": str(rng.choice(["True", "False", "UNK"], p=[.3, .65, .05])),
        "elevation": str(rng.choice(["True", "False"])),
        "biopsed": str(dx in {"BCC", "MEL", "SCC"} or bool(rng.random() < 0.4)),
    }  # fmt: skip


def _pad_ufes_20(out: Path, n: int, rng: np.random.Generator, size: int) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    lesion_of = {v: k for k, v in PAD_UFES_TO_HAM.items()}
    per_dx = {lesion_of[c]: n for c in CLASSES if c in lesion_of}
    per_dx["SCC"] = max(2, n // 4)
    rows: list[list[object]] = []
    patient_no, lesion_no, used_img_nos = 10, 100, set()
    for dx, count in per_dx.items():
        label = PAD_UFES_TO_HAM.get(dx, "scc")
        for n_img in _group_sizes(rng, count):
            patient_id = f"PAT_{patient_no}"
            patient_no += int(rng.integers(1, 40))
            sparse = rng.random() < 0.3  # like the real file: many rows leave these empty
            age = int(rng.integers(18, 90))
            person = _pad_person(rng, sparse)
            # one or two lesions per patient, together 1-3 images
            lesion_sizes = [n_img] if n_img < 3 or rng.random() < 0.5 else [1, n_img - 1]
            for lesion_images in lesion_sizes:
                lesion_id = lesion_no
                lesion_no += int(rng.integers(1, 30))
                lesion = _pad_lesion(rng, dx, sparse)
                for img in _lesion_images(label, rng, lesion_images, size):
                    img_no = int(rng.integers(1, 1000))
                    while img_no in used_img_nos:
                        img_no = int(rng.integers(1, 4000))
                    used_img_nos.add(img_no)
                    img_id = f"{patient_id}_{lesion_id}_{img_no}.png"
                    if rng.random() < 0.5:  # like the real files: some RGBA, opaque alpha
                        img = img.convert("RGBA")
                    img.save(out / "images" / img_id)
                    values = {
                        "patient_id": patient_id, "lesion_id": lesion_id, "age": age,
                        "diagnostic": dx, "img_id": img_id, **person, **lesion,
                    }  # fmt: skip
                    rows.append([values[c] for c in PAD_COLUMNS])
    order = rng.permutation(len(rows))
    _write_csv(out / PAD_METADATA, PAD_COLUMNS, [rows[i] for i in order])


def _isic2018(out: Path, n: int, rng: np.random.Generator, size: int) -> None:
    (out / ISIC2018_IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    labels = [c for c in CLASSES for _ in range(n)]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    rows: list[list[object]] = []
    for i, label in enumerate(labels):
        image = f"ISIC_{34524 + i:07d}"
        make_lesion_image(label, rng, size).save(out / ISIC2018_IMAGE_DIR / f"{image}.jpg",
                                                 quality=90)  # fmt: skip
        rows.append([image, *("1.0" if c.lower() == label else "0.0" for c in ISIC2018_COLUMNS)])
    (out / ISIC2018_IMAGE_DIR / "LICENSE.txt").write_text("CC BY-NC (synthetic stand-in)\n")
    _write_csv(out / ISIC2018_GROUND_TRUTH, ["image", *ISIC2018_COLUMNS], rows)


def _folder(out: Path, n: int, rng: np.random.Generator, size: int) -> None:
    for label in CLASSES:
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            make_lesion_image(label, rng, size).save(out / label / f"{label}_{i:04d}.jpg",
                                                     quality=90)  # fmt: skip


def _csv(out: Path, n: int, rng: np.random.Generator, size: int) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[list[object]] = []
    group_no = 0
    for label in CLASSES:
        for n_img in _group_sizes(rng, n):
            group = f"case{group_no:04d}"
            group_no += 1
            for k, img in enumerate(_lesion_images(label, rng, n_img, size)):
                rel = f"images/{group}_{k}.jpg"
                img.save(out / rel, quality=90)
                rows.append([rel, label, group])
    order = rng.permutation(len(rows))
    _write_csv(out / BYO_CSV, ["path", "label", "group"], [rows[i] for i in order])


_WRITERS: dict[str, Callable[[Path, int, np.random.Generator, int], None]] = {
    "ham10000": _ham10000,
    "pad-ufes-20": _pad_ufes_20,
    "isic2018": _isic2018,
    "folder": _folder,
    "csv": _csv,
}


def write_sample(
    out: Path, format: str = "ham10000", n: int = 20, seed: int = 0, size: int = 64
) -> Path:
    """Write a generated dataset in a real `format` (n images per class) and return its root.

    pad-ufes-20 gets n images per PAD diagnostic (ACK, BCC, MEL, NEV, SEK) plus a few SCC.
    Lesions and patients have 1-3 images each, so splits must group them. Deterministic for
    a seed.
    """
    if format not in _WRITERS:
        raise ValueError(f"unknown sample format {format!r}; expected one of {SAMPLE_FORMATS}")
    if n < 1 or size < 8:
        raise ValueError("n must be >= 1 and size >= 8")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _WRITERS[format](out, n, np.random.default_rng(seed), size)
    return out


# ---------------------------------------------------------------------------- broken


def _metadata(root: Path, format: str) -> tuple[Path, str, str]:
    """(metadata CSV, id column, label column) of a sample; ValueError for `folder`."""
    if format == "ham10000":
        return root / HAM_METADATA, "image_id", "dx"
    if format == "pad-ufes-20":
        return root / PAD_METADATA, "img_id", "diagnostic"
    if format == "isic2018":
        return root / ISIC2018_GROUND_TRUTH, "image", "MEL"
    if format == "csv":
        return root / BYO_CSV, "path", "label"
    raise ValueError(f"format {format!r} has no metadata file")


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".png"})


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def write_broken(
    out: Path, kind: str, format: str = "ham10000", n: int = 2, seed: int = 0, size: int = 32
) -> Path:
    """Write a small sample in `format` with one defect of `kind` (see BROKEN_KINDS).

    Returns the path to give to `skinclf data check` (for "no-such-path", a path that does
    not exist). Every kind works for ham10000, pad-ufes-20, isic2018 and csv; the image
    kinds, "extra-image", "unknown-label" and "empty-folder" also for folder.
    """
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken kind {kind!r}; expected one of {BROKEN_KINDS}")
    out = Path(out)
    if kind == "no-such-path":
        out.mkdir(parents=True, exist_ok=True)
        return out / "does-not-exist"
    if kind == "empty-folder":
        out.mkdir(parents=True, exist_ok=True)
        if any(out.iterdir()):
            raise ValueError(f"{out} is not empty")
        return out
    if format == "folder" and kind in ("missing-image", "duplicate-id", "missing-column",
                                       "not-a-csv"):  # fmt: skip
        raise ValueError(f"broken kind {kind!r} needs a format with a metadata file")
    root = write_sample(out, format, n=n, seed=seed, size=size)
    images = _images(root)
    victim = images[len(images) // 2]
    if kind == "missing-image":
        victim.unlink()
    elif kind == "extra-image":
        target = victim.parent if format != "folder" else root  # folder: no class folder
        make_lesion_image("nv", np.random.default_rng(seed), size).save(
            target / ("ISIC_9999999.jpg" if format != "pad-ufes-20" else "PAT_9_9_9.png")
        )
    elif kind == "unreadable-image":
        victim.write_bytes(b"this is not an image, just text with an image name\n" * 4)
    elif kind == "truncated-image":
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
    elif kind == "zero-byte-image":
        victim.write_bytes(b"")
    elif format == "folder":  # unknown-label
        shutil.move(str(root / "vasc"), str(root / "angioma"))
    else:
        meta, id_col, label_col = _metadata(root, format)
        header, rows = _read_rows(meta)
        if kind == "unknown-label":
            col = header.index(label_col)
            rows[1][col] = "2.0" if format == "isic2018" else "melanocytic"
        elif kind == "duplicate-id":
            rows.append(list(rows[0]))
        elif kind == "missing-column":
            col = header.index(label_col if format != "isic2018" else "image")
            header = header[:col] + header[col + 1 :]
            rows = [r[:col] + r[col + 1 :] for r in rows]
        if kind == "not-a-csv":
            meta.write_bytes(bytes(np.random.default_rng(seed).integers(0, 256, 4096, np.uint8)))
        else:
            _write_csv(meta, header, rows)
    return root
