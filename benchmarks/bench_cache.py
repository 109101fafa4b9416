"""Decode-cache benchmark: build speed, and batches read from the cache vs decoding JPEGs.

    .venv/bin/python benchmarks/bench_cache.py [DATA] [--size 192] [--batches 20]

DATA defaults to ../shared/data/ham10000-224 (relative to the repository). Measures
1. images/s to build the cache cold (a fresh temporary cache folder),
2. median images/s (of --repeats runs) of shuffled batches of 64 with a random D4
   flip/rotation, read
   a) from the cache (CachedImageDataset, one epoch), b) by decoding + resizing each JPEG every time
   (a plain PIL Dataset, --batches batches), each through a DataLoader with num_workers 0 and 2.
Writes benchmarks/results/cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from skinclf.data.cache import build_cache, decode_image
from skinclf.data.dataset import CachedImageDataset, label_indices
from skinclf.data.formats import load_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "ham10000-224"
RESULTS = REPO / "benchmarks" / "results" / "cache.json"


def d4(image: torch.Tensor) -> torch.Tensor:
    """A random element of the dihedral group D4: rotation by k x 90 degrees, maybe a flip."""
    k = int(torch.randint(4, ()).item())
    if k:
        image = torch.rot90(image, k, dims=(1, 2))
    if torch.rand(()) < 0.5:
        image = torch.flip(image, dims=(2,))
    return image.contiguous()


class JpegDataset(Dataset):
    """The baseline: decode + resize the source file for every item (same decoder)."""

    def __init__(self, paths: list[str], labels: list[int], size: int):
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = decode_image(self.paths[i], self.size, "squash")
        return d4(torch.from_numpy(pixels).permute(2, 0, 1)), self.labels[i]


def time_loader(dataset: Dataset, workers: int, batches: int | None, batch: int) -> float:
    """images/s over ``batches`` shuffled batches (None: one epoch), DataLoader start included."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
    n = 0
    start = time.perf_counter()
    for done, (images, _) in enumerate(loader, start=1):
        n += len(images)
        if batches is not None and done >= batches:
            break
    return n / (time.perf_counter() - start)


def measure(dataset: Dataset, workers: int, batches: int | None, batch: int, repeats: int) -> dict:
    """Median images/s of ``repeats`` runs (the machine is shared: single runs are noisy)."""
    torch.manual_seed(0)
    runs = [time_loader(dataset, workers, batches, batch) for _ in range(repeats)]
    n_batches = batches if batches is not None else -(-len(dataset) // batch)
    return {
        "workers": workers,
        "batches_per_run": n_batches,
        "runs_images_per_s": [round(r, 1) for r in runs],
        "images_per_s": round(float(statistics.median(runs)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="batches for the JPEG side")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (build)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    table = load_dataset(args.data)
    labels = label_indices(table["label"])
    results: dict = {
        "benchmark": "decode cache",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": args.data.name,
        "n_images": len(table),
        "size": args.size,
        "resize": "squash",
        "batch": args.batch,
        "augmentation": "random D4 (rot90 x k, horizontal flip) per image",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        },
    }
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        decoded = build_cache(
            table, args.size, cache_dir=Path(cache_dir), workers=args.workers, progress=True
        )
        seconds = time.perf_counter() - start
        results["build"] = {
            "workers": args.workers or min(8, os.cpu_count() or 1),
            "seconds": round(seconds, 2),
            "images_per_s": round(len(table) / seconds, 1),
            "cache_bytes": int(decoded.images.nbytes),
            "note": "cold cache folder; the source JPEGs may sit in the OS page cache",
        }
        print("build", results["build"])

        cached = CachedImageDataset(decoded, table["image_id"].tolist(), labels, transform=d4)
        jpegs = JpegDataset(table["path"].tolist(), labels, args.size)
        read = {}
        for workers in (0, 2):
            read[f"cache_workers{workers}"] = measure(
                cached, workers, None, args.batch, args.repeats
            )
            print(f"cache_workers{workers}", read[f"cache_workers{workers}"])
        for workers in (0, 2):
            read[f"jpeg_workers{workers}"] = measure(
                jpegs, workers, args.batches, args.batch, args.repeats
            )
            print(f"jpeg_workers{workers}", read[f"jpeg_workers{workers}"])
        results["read"] = read
        del cached, decoded

    rate = {k: v["images_per_s"] for k, v in read.items()}
    results["ratio"] = {
        "cache_vs_jpeg_workers0": round(rate["cache_workers0"] / rate["jpeg_workers0"], 1),
        "cache_vs_jpeg_workers2": round(rate["cache_workers2"] / rate["jpeg_workers2"], 1),
        "best_cache_vs_best_jpeg": round(
            max(rate["cache_workers0"], rate["cache_workers2"])
            / max(rate["jpeg_workers0"], rate["jpeg_workers2"]),
            1,
        ),
    }
    print("ratio", results["ratio"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
