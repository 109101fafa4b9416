"""Which feature layer separates shifted images best? Per-stage pooled features as OOD scores.

    .venv/bin/python benchmarks/feature_layers.py --run RUN --ood PAD_FOLDER \
        --external ISIC_FOLDER [--cache /work/exp/layer_cache] [--out JSON] [--scores ...]

For the run's classifier (RUN/checkpoints/best.ckpt) it runs ONE pass per image (no TTA, eval
mode, fp32, batch 64, 2 threads) over the run's HAM10000 images (RUN/provenance.json
"data_path", split by RUN/split.csv), the far-shift set `--ood` (PAD-UFES-20: smartphone
clinical photos) and the near-shift set `--external` (ISIC 2018 test: dermoscopy like
HAM10000, other clinics). Forward hooks keep the global-average-pooled output of every block
stage of the backbone (`backbone.blocks[i]`) and of its final conv head (`bn2`, whose pooled
output is the penultimate feature `Classifier.features` that the gates use today).

For each layer the feature scores of skinclf.scoring.feature_scores (Mahalanobis, relative
Mahalanobis, kNN with k=10) are fitted on the training split's features and evaluated as:

- AUROC HAM test vs PAD and ISIC vs PAD (in-distribution positive; near 1 wanted) and
  FPR at 95 % TPR for both (near 0 wanted);
- AUROC HAM test vs ISIC (ISIC should look like HAM10000: near 0.5 wanted) and, as a check,
  HAM val vs HAM test (should be near 0.5).

Also the feature ensemble of Lee et al. (NeurIPS 2018) without its input preprocessing and
without its OOD-fitted weights: per-layer Mahalanobis scores standardised with the mean and
standard deviation of the training images' scores, summed over all layers (`ensemble_all`)
and over the last four stages and the head (`ensemble_deep`). MSP of the logits is the
baseline. Pooled features are cached per image set in `--cache` (.npz keyed by the
checkpoint's and the decoded images' hashes), so a rerun with other scores is instant.
Writes JSON (default benchmarks/results/feature_layers_default.json) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from skinclf.data.cache import build_cache  # noqa: E402
from skinclf.data.dataset import label_indices  # noqa: E402
from skinclf.data.formats import read_dataset  # noqa: E402
from skinclf.data.split import read_split  # noqa: E402
from skinclf.evaluate.ood import detection_auroc, fpr_at_tpr  # noqa: E402
from skinclf.models.classifier import checkpoint_fingerprint, load_classifier  # noqa: E402
from skinclf.scoring.feature_scores import (  # noqa: E402
    fit_knn,
    fit_mahalanobis,
    fit_relative_mahalanobis,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "feature_layers_default.json"
CACHE_VERSION = 1
SCORES = ("mahalanobis", "rel_mahalanobis", "knn")
DEEP_FROM = 3  # ensemble_deep: blocks[3:] and the head
SETS = ("train", "val", "test", "pad", "isic")


# ---------------------------------------------------------------- data


def load_sets(run: Path, ood: Path, external: Path) -> dict[str, tuple[pd.DataFrame, str]]:
    """set -> (dataset table, source): the run's train/val/test images (source "ham", one
    table so that they share one decode cache), PAD-UFES-20 and ISIC 2018."""
    prov = json.loads((run / "provenance.json").read_text())
    ham = read_dataset(prov["data_path"]).table
    ham = ham[ham["label"].astype(str) != ""].reset_index(drop=True)
    parts = read_split(run / "split.csv", ham)
    sets = {s: (ham[parts["split"].to_numpy() == s], "ham") for s in SETS[:3]}
    sets["pad"] = (read_dataset(ood).table, "pad")  # every image, the SCC ones included
    sets["isic"] = (read_dataset(external).table, "isic")
    for name, (table, _) in sets.items():
        if table.empty:
            sys.exit(f"{name}: no images")
    return sets


# ---------------------------------------------------------------- features


def layer_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """name -> module whose output is pooled: each block stage, then the final conv head."""
    backbone = model.backbone
    layers = {f"block{i}": block for i, block in enumerate(backbone.blocks)}
    layers["head"] = backbone.bn2  # conv_head -> bn2 (+act) -> global pool = penultimate
    return layers


@torch.inference_mode()
def extract(model, images: np.ndarray, rows: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """{layer: (N, C) pooled features, 'logits': (N, K), 'features': (N, D)} of images[rows]."""
    pooled: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def keep(_module, _inputs, output):
            pooled.setdefault(name, []).append(output.float().mean(dim=(2, 3)).clone())

        return keep

    handles = [m.register_forward_hook(hook(n)) for n, m in layer_modules(model).items()]
    logits, feats = [], []
    try:
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(images[idx])).permute(0, 3, 1, 2)
            f = model.features(x)
            feats.append(f.float())
            logits.append(model.head(f).float())
    finally:
        for h in handles:
            h.remove()
    out = {name: torch.cat(v).numpy() for name, v in pooled.items()}
    out["logits"], out["features"] = torch.cat(logits).numpy(), torch.cat(feats).numpy()
    return out


def set_features(
    model, images, ids: np.ndarray, fingerprint: str, cache: Path, batch_size: int, console
) -> dict[str, np.ndarray]:
    """The pooled features of images `ids` of a decode cache, from `cache` or one pass."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    path = cache / f"layers-v{CACHE_VERSION}-{fingerprint}-{images.key}-{digest}.npz"
    if path.is_file():
        z = np.load(path)
        if np.array_equal(z["image_ids"], ids):
            return {k: z[k] for k in z.files if k != "image_ids"}
    start = time.perf_counter()
    out = extract(model, images.images, images.rows(ids), batch_size)
    seconds = time.perf_counter() - start
    console.print(f"  {len(ids)} images in {seconds:.0f} s ({len(ids) / seconds:.1f} img/s)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, image_ids=ids, **out)
    tmp.replace(path)
    out["seconds"] = np.array(seconds)
    return out


# ---------------------------------------------------------------- scores


def msp(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).max(axis=1)


def fit_score(name: str, train: np.ndarray, labels: np.ndarray, knn_k: int):
    if name == "mahalanobis":
        return fit_mahalanobis(train, labels)
    if name == "rel_mahalanobis":
        return fit_relative_mahalanobis(train, labels)
    if name == "knn":
        return fit_knn(train, k=knn_k)
    raise ValueError(f"unknown score {name!r}; choose from {', '.join(SCORES)}")


def layer_scores(
    feats: dict[str, dict[str, np.ndarray]], layers: list[str], scores: list[str], knn_k: int
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(layer, score) -> {set: (N,) score}: fitted on the train features, applied to each set."""
    labels = feats["train"]["labels"]
    out = {}
    for layer in layers:
        for name in scores:
            scorer = fit_score(name, feats["train"][layer], labels, knn_k)
            out[(layer, name)] = {s: scorer.score(feats[s][layer]) for s in SETS}
    return out


def ensemble(per_layer: dict, layers: list[str], score: str = "mahalanobis") -> dict:
    """Sum over `layers` of each layer's score standardised on the training images' scores."""
    total = {s: 0.0 for s in SETS}
    for layer in layers:
        train = per_layer[(layer, score)]["train"]
        mu, sd = train.mean(), max(train.std(), 1e-12)
        for s in SETS:
            total[s] = total[s] + (per_layer[(layer, score)][s] - mu) / sd
    return total


def metrics(by_set: dict[str, np.ndarray]) -> dict[str, float]:
    test, pad, isic = by_set["test"], by_set["pad"], by_set["isic"]
    return {
        "auroc_test_vs_pad": detection_auroc(test, pad),
        "auroc_isic_vs_pad": detection_auroc(isic, pad),
        "auroc_test_vs_isic": detection_auroc(test, isic),
        "fpr95_test_vs_pad": fpr_at_tpr(test, pad, 0.95),
        "fpr95_isic_vs_pad": fpr_at_tpr(isic, pad, 0.95),
        "auroc_val_vs_test": detection_auroc(by_set["val"], test),
    }


# ---------------------------------------------------------------- report

COLUMNS = (
    ("auroc_test_vs_pad", "AUROC\ntest/PAD"),
    ("auroc_isic_vs_pad", "AUROC\nISIC/PAD"),
    ("auroc_test_vs_isic", "AUROC\ntest/ISIC"),
    ("fpr95_test_vs_pad", "FPR95\ntest/PAD"),
    ("fpr95_isic_vs_pad", "FPR95\nISIC/PAD"),
    ("auroc_val_vs_test", "AUROC\nval/test"),
)


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="Pooled features per layer as OOD scores (one pass, no TTA)")
    for head in ("layer", "dim", "score"):
        table.add_column(head)
    for _, head in COLUMNS:
        table.add_column(head, justify="right")
    for row in rows:
        values = [f"{row[key]:.3f}" for key, _ in COLUMNS]
        table.add_row(row["layer"], str(row["dim"]), row["score"], *values)
    console.print(table)


def machine() -> dict:
    import sklearn
    import timm

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }


# ---------------------------------------------------------------- main


def collect_features(args, model, fingerprint: str, console: Console) -> tuple[dict, dict]:
    spec = model.spec
    sets = load_sets(args.run, args.ood, args.external)
    decoded: dict[str, object] = {}
    feats, timing = {}, {}
    for name, (table, source) in sets.items():
        console.print(f"{name}: {len(table)} images")
        if source not in decoded:
            whole = pd.concat([t for t, s in sets.values() if s == source]).drop_duplicates(
                "image_id"
            )
            decoded[source] = images = build_cache(
                whole, spec.image_size, spec.resize, progress=False, skip_unreadable=True
            )
            if images.unreadable:
                console.print(f"[yellow]{source}: {len(images.unreadable)} unreadable images")
        ids = table["image_id"].astype(str).to_numpy(dtype=str)
        feats[name] = set_features(
            model, decoded[source], ids, fingerprint, args.cache, args.batch, console
        )
        seconds = feats[name].pop("seconds", None)  # None: read from the cache
        timing[name] = None if seconds is None else round(float(seconds), 1)
        feats[name]["labels"] = np.asarray(label_indices(table["label"]))
        feats[name]["n"] = len(table)
    head = np.abs(feats["test"]["head"] - feats["test"]["features"]).max()
    if head > 1e-4:
        sys.exit(f"pooled bn2 output differs from Classifier.features by {head}")
    return feats, timing


def evaluate(feats: dict, layers: list[str], scores: list[str], knn_k: int) -> list[dict]:
    per_layer = layer_scores(feats, layers, scores, knn_k)
    rows = []
    for (layer, score), by_set in per_layer.items():
        dim = int(feats["train"][layer].shape[1])
        rows.append({"layer": layer, "dim": dim, "score": score, **metrics(by_set)})
    if "mahalanobis" in scores:
        deep = [layer for layer in layers if layer == "head" or int(layer[5:]) >= DEEP_FROM]
        for name, members in (("ensemble_all", layers), ("ensemble_deep", deep)):
            total = ensemble(per_layer, members)
            dim = sum(int(feats["train"][m].shape[1]) for m in members)
            rows.append({"layer": name, "dim": dim, "score": "mahalanobis", **metrics(total)})
    by_set = {s: msp(feats[s]["logits"]) for s in SETS}
    rows.append({"layer": "logits", "dim": 7, "score": "msp", **metrics(by_set)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--ood", type=Path, required=True, help="PAD-UFES-20 folder")
    parser.add_argument("--external", type=Path, required=True, help="ISIC 2018 folder")
    parser.add_argument("--cache", type=Path, default=Path("/work/exp/layer_cache"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--scores", nargs="+", default=list(SCORES), choices=SCORES)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console(width=150)
    ckpt = args.run / "checkpoints" / "best.ckpt"
    model = load_classifier(ckpt).eval()
    fingerprint = checkpoint_fingerprint(ckpt)
    feats, timing = collect_features(args, model, fingerprint, console)
    layers = list(layer_modules(model))
    rows = evaluate(feats, layers, args.scores, args.knn_k)
    print_table(rows, console)
    result = {
        "what": "OOD scores of the pooled output of each backbone stage (one pass, no TTA, "
        "fp32, eval mode); fitted on the run's training split. AUROC: in-distribution "
        "positive; FPR95: share of the shifted set accepted at 95 % TPR.",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(args.run.resolve()),
        "checkpoint_fingerprint": fingerprint,
        "backbone": model.spec.backbone,
        "image_size": model.spec.image_size,
        "ood": str(args.ood.resolve()),
        "external": str(args.external.resolve()),
        "n_images": {s: int(feats[s]["n"]) for s in SETS},
        "pass_seconds": timing,
        "knn_k": args.knn_k,
        "ensemble_deep_layers": f"block{DEEP_FROM}.. and head",
        "machine": machine(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
