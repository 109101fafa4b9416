"""Training and prediction speed, and the fraction of the machine's matmul peak they reach.

    .venv/bin/python benchmarks/bench_speed.py [--backbone efficientnet_lite0] [--size 224] \
        [--rounds 3] [--steps 4] [--threads N] [--out benchmarks/results/speed.json]

In one process, configurations interleaved round by round (A, B, C, D, A, B, ...; the best
round of each is kept, the least disturbed on a shared machine), on synthetic inputs:
- **train**: images/s of a full fine-tuning step (forward, cross-entropy on a 7-class head,
  backward, AdamW; train mode; batch `--batch`, 32) in fp32 or under bf16 autocast, with
  channels_last on or off;
- **predict**: images/s of eval-mode forward under `torch.inference_mode` (batch
  `--predict-batch`, 64), fp32 and bf16 autocast, channels_last;
- **peak**: GFLOP/s of a large fp32 and bf16 matmul (`--matmul`^3, best of `--matmul-repeats`),
  measured in the same run;
- **FLOPs**: the model's forward FLOPs per image (torch.utils.flop_counter, a multiply-add
  counted as 2), training taken as 3 x forward; the fraction of the matmul peak (of the same
  precision) each configuration reaches.
Ratios are against the fp32 channels_last configuration. Runs on CUDA when it is available
(`--device`). The frozen-stage cache is measured by bench_frozen_cache.py.
Writes benchmarks/results/speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402

from skinclf.models import create_backbone  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "speed.json"
TRAIN = [("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)]  # baseline first
PREDICT = [("fp32", True), ("bf16", True)]


class Net(nn.Module):
    """Backbone (pooled features) + a 7-class linear head."""

    def __init__(self, backbone: nn.Module, features: int) -> None:
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(features, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def make_net(name: str, channels_last: bool, device: torch.device) -> Net:
    backbone, info = create_backbone(name, pretrained=False)  # speed does not need the weights
    net = Net(backbone, int(info.num_features)).to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_second(
    step: Callable[[], None], calls: int, device: torch.device, warmup: int = 1
) -> float:
    """Calls of `step` per second (mean over `calls`, after `warmup` untimed calls)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    sync(device)
    return calls / (time.perf_counter() - t0)


def matmul_gflops(n: int, dtype: torch.dtype, repeats: int, device: torch.device) -> float:
    """Best GFLOP/s of an n x n by n x n matmul (2 n^3 FLOPs) in `dtype`, of `repeats` calls
    (fewer when one call takes over 5 s: a precision without a fast kernel on this machine)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats):
        best = max(best, per_second(lambda: torch.mm(a, b), 1, device))
        if best < 0.2:
            break
    return best * 2 * n**3 / 1e9


def forward_flops(name: str, size: int) -> int:
    """Forward FLOPs of one image (torch's FlopCounterMode: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = make_net(name, False, torch.device("cpu")).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def batch(size: int, n: int, channels_last: bool, device: torch.device) -> torch.Tensor:
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_step(net: Net, x: torch.Tensor, precision: str) -> Callable[[], None]:
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    y = torch.randint(0, 7, (x.shape[0],), generator=torch.Generator().manual_seed(0))
    y = y.to(x.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    return step


def predict_step(net: Net, x: torch.Tensor, precision: str) -> Callable[[], None]:
    net.eval()

    def step() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"),
        ):
            net(x)

    return step


def label(precision: str, channels_last: bool) -> str:
    return f"{precision}{', channels_last' if channels_last else ''}"


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """images/s per round of every configuration, interleaved round by round."""
    nets = {cl: make_net(args.backbone, cl, device) for cl in {cl for _, cl in PREDICT}}
    train_nets = {cfg: make_net(args.backbone, cfg[1], device) for cfg in TRAIN}
    steps: dict[tuple[str, str, bool], tuple[Callable[[], None], int]] = {}
    for p, cl in TRAIN:
        x = batch(args.size, args.batch, cl, device)
        steps["train", p, cl] = train_step(train_nets[p, cl], x, p), args.batch
    for p, cl in PREDICT:
        x = batch(args.size, args.predict_batch, cl, device)
        steps["predict", p, cl] = predict_step(nets[cl], x, p), args.predict_batch
    rounds: dict[str, dict[str, list[float]]] = {"train": {}, "predict": {}}
    for r in range(args.rounds):
        for (mode, p, cl), (step, n) in steps.items():
            ips = n * per_second(step, args.steps, device, warmup=1 if r == 0 else 0)
            rounds[mode].setdefault(label(p, cl), []).append(round(ips, 2))
            print(f"round {r + 1} {mode:7s} {label(p, cl):22s} {ips:8.1f} img/s", flush=True)
    return rounds


def rows(
    rounds: dict[str, list[float]], flops: int, factor: int, peak: dict[str, float]
) -> list[dict]:
    """One row per configuration: best and median images/s, ratio, GFLOP/s, fraction of peak."""
    base = max(next(iter(rounds.values())))  # the first configuration: fp32 channels_last
    out = []
    for name, values in rounds.items():
        best = max(values)
        gflops = best * flops * factor / 1e9
        precision = name.split(",")[0]
        fraction = round(gflops / peak[precision], 4) if peak[precision] else None
        out.append(
            {
                "config": name,
                "precision": precision,
                "channels_last": "channels_last" in name,
                "images_per_s": round(best, 2),
                "median_images_per_s": round(statistics.median(values), 2),
                "rounds_images_per_s": values,
                "ratio_vs_fp32_channels_last": round(best / base, 3),
                "gflops_per_s": round(gflops, 2),
                "fraction_of_matmul_peak": fraction,
            }
        )
    return out


def machine(device: torch.device) -> dict:
    from bench_backbone import cpu_description  # next to this script

    info = cpu_description()
    info["device"] = str(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["torch_threads"] = torch.get_num_threads()
    return info


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("timm", "skinclf"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def print_table(result: dict) -> None:
    peak = result["matmul_peak_gflops_per_s"]
    table = Table(
        title=f"{result['settings']['backbone']} at {result['settings']['size']} px on "
        f"{result['machine']['device']} (matmul peak fp32 {peak['fp32']:.0f}, "
        f"bf16 {peak['bf16']:.0f} GFLOP/s)"
    )
    for col in ("mode", "configuration", "images/s", "vs fp32 CL", "GFLOP/s", "of peak"):
        table.add_column(col, justify="left" if col in ("mode", "configuration") else "right")
    for mode in ("train", "predict"):
        for r in result[mode]:
            frac = r["fraction_of_matmul_peak"]
            table.add_row(
                mode,
                r["config"],
                f"{r['images_per_s']:.1f}",
                f"{r['ratio_vs_fp32_channels_last']:.2f}x",
                f"{r['gflops_per_s']:.1f}",
                "–" if frac is None else f"{100 * frac:.1f} %",
            )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32, help="training batch")
    parser.add_argument("--predict-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--matmul", type=int, default=2048, help="matmul side for the peak")
    parser.add_argument("--matmul-repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    peak = {
        p: round(matmul_gflops(args.matmul, dt, args.matmul_repeats, device), 1)
        for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    flops = forward_flops(args.backbone, args.size)
    rounds = measure(args, device)
    result = {
        "benchmark": "speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "versions": versions(),
        "settings": {
            "backbone": args.backbone,
            "size": args.size,
            "batch": args.batch,
            "predict_batch": args.predict_batch,
            "steps": args.steps,
            "rounds": args.rounds,
            "matmul": args.matmul,
            "inputs": "synthetic",
            "train_step": "forward + CE on a 7-class linear head + backward + AdamW, train mode",
            "predict_step": "forward, eval mode, inference_mode",
            "kept": "best round of each configuration (median recorded too)",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "load_average_1min": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "matmul_peak_gflops_per_s": peak,
        "forward_gflops_per_image": round(flops / 1e9, 4),
        "flops_counter": "torch.utils.flop_counter.FlopCounterMode; training = 3 x forward",
        "train": rows(rounds["train"], flops, 3, peak),
        "predict": rows(rounds["predict"], flops, 1, peak),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
