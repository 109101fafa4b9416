"""Partial fine-tuning with and without the frozen-stage activation cache (`train.frozen_cache`).

    .venv/bin/python benchmarks/bench_frozen_cache.py [--size 224] [--unfreeze 5] [--batch 32]

Times, on this CPU, one training step (forward + cross-entropy on the 7-class head + backward +
AdamW step, fp32, channels_last, train mode) of EfficientNet-Lite0 for
- **full**: every stage trained (`train.unfreeze=all`);
- **partial**: the last `--unfreeze` stages trained, the frozen prefix recomputed every step;
- **cached**: the same trainable stages fed from cached prefix activations (float16, as cached);
and the throughput of building the cache (the prefix under bf16 autocast, eval mode), per
image view. Each is `--iters` steps after 2 warm-up steps, configurations interleaved over
`--rounds` rounds, best round kept. Synthetic inputs. Writes benchmarks/results/frozen_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from skinclf.config import load_config  # noqa: E402
from skinclf.models import create_backbone  # noqa: E402
from skinclf.train.activations import frozen_blocks, prefix_forward  # noqa: E402
from skinclf.train.module import SkinClassifier  # noqa: E402


def build(unfreeze: str) -> SkinClassifier:
    # the whole network trained has no frozen stages to cache: frozen_cache off for that one
    cached = "false" if unfreeze == "all" else "true"
    cfg = load_config(
        "default", overrides=[f"train.unfreeze={unfreeze}", f"train.frozen_cache={cached}"]
    )
    backbone, info = create_backbone(cfg.model.backbone, drop_path_rate=0.1)
    model = SkinClassifier(
        cfg, torch.nn.CrossEntropyLoss(), backbone, info.stages, info.mean, info.std, 1280
    )
    return model.to(memory_format=torch.channels_last).train()


def step_timer(model: SkinClassifier, x: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return len(y) * iters / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--unfreeze", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/frozen_cache.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    y = torch.randint(0, 7, (args.batch,))

    full, partial = build("all"), build(str(args.unfreeze))
    cached = build(str(args.unfreeze))
    k = frozen_blocks(cached.backbone, cached.stages, args.unfreeze)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        acts = prefix_forward(cached.eval(), x, k).float().half()
    cached.train()
    cached.prefix_blocks = k
    prefix = build(str(args.unfreeze)).eval()

    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, model, inp in (
            ("full", full, x),
            ("partial", partial, x),
            ("cached", cached, acts.clone()),
        ):
            best[name] = max(best.get(name, 0.0), step_timer(model, inp, y, args.iters))
            print(f"{name:8s} {best[name]:6.1f} img/s", flush=True)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            prefix_forward(prefix, x, k)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                prefix_forward(prefix, x, k)
            ips = args.batch * args.iters / (time.perf_counter() - t0)
        best["cache_build"] = max(best.get("cache_build", 0.0), ips)
        print(f"cache build {best['cache_build']:6.1f} img views/s", flush=True)

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch": torch.__version__,
        "backbone": "efficientnet_lite0",
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "unfreeze": args.unfreeze,
        "frozen_blocks": k,
        "activation_shape": list(acts.shape[1:]),
        "train_images_per_second": {n: round(best[n], 1) for n in ("full", "partial", "cached")},
        "cache_build_views_per_second": round(best["cache_build"], 1),
        "speedup_cached_vs_full": round(best["cached"] / best["full"], 2),
        "speedup_cached_vs_partial": round(best["cached"] / best["partial"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
