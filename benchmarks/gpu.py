"""GPU throughput of every CUDA path: database build at 2 and 1 mm, one 1 mm T = 300 d simulation,
refinement-sized batches, STU-Net-B and -L inference on one BraTS-sized case, and one training step,
with peak GPU memory. Run by ``benchmarks/gpu.sh`` (which checks for CUDA first).

    python benchmarks/gpu.py [--quick]

Each figure is measured on the GPU next to its CPU counterpart where one fits the time
(build at 2 mm: the same design indices on the CPU fused kernels, one process). Ends with one
line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BRATS_SHAPE = (4, 240, 240, 155)
PATCH = (128, 128, 128)


def _peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20


def _sync() -> None:
    torch.cuda.synchronize()


def build_rate(resolution_mm: float, n: int, device: str, root: Path) -> dict:
    from gliofit.simulations_db.build import build_database, create_database

    db = root / f"db-{resolution_mm:g}mm-{device}"
    create_database(db, resolution_mm=resolution_mm)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    report = build_database(
        db, n, progress=False, index_kind=None, device=device, workers=1 if device == "cuda" else None
    )
    s = time.perf_counter() - t0
    return {
        "simulations": report["simulations"],
        "seconds": s,
        "simulations_per_hour": 3600.0 * n / s,
        "peak_gpu_mb": _peak_mb() if device == "cuda" else None,
    }


def one_simulation(resolution_mm: float, T_days: float) -> dict:
    from gliofit.growth.atlas import load_atlas, resample_atlas
    from gliofit.growth.solver import simulate_one

    grid = resample_atlas(load_atlas(), resolution_mm)
    origin = [-30.0, -10.0, 20.0]
    simulate_one(grid, 0.2, 0.05, origin, 10.0, device="cuda")  # warm (kernels, compile)
    torch.cuda.reset_peak_memory_stats()
    _sync()
    t0 = time.perf_counter()
    u = simulate_one(grid, 0.5, 0.03, origin, T_days, device="cuda")
    _sync()
    return {
        "seconds": time.perf_counter() - t0,
        "grid": list(grid.shape),
        "volume_cm3_u_ge_0.25": float((u >= 0.25).sum() * grid.voxel_volume_mm3 / 1000),
        "peak_gpu_mb": _peak_mb(),
    }


def stunet_inference(variant: str) -> dict:
    from gliofit.segmentation.predict import sliding_window_logits
    from gliofit.segmentation.stunet import STUNet

    torch.manual_seed(0)
    net = STUNet.from_variant(variant, in_channels=4, num_classes=3).cuda().eval()
    x = torch.randn(BRATS_SHAPE, dtype=torch.float32)
    sliding_window_logits(net, x[:, :128, :128, :128], PATCH)  # warm
    torch.cuda.reset_peak_memory_stats()
    _sync()
    t0 = time.perf_counter()
    no_tta = sliding_window_logits(net, x, PATCH)
    _sync()
    t1 = time.perf_counter()
    tta = sliding_window_logits(net, x, PATCH, mirror_axes=(0, 1, 2))
    _sync()
    t2 = time.perf_counter()
    bf16 = sliding_window_logits(net, x, PATCH, autocast_dtype=torch.bfloat16)
    _sync()
    t3 = time.perf_counter()
    return {
        "seconds_no_tta": t1 - t0,
        "seconds_tta": t2 - t1,
        "seconds_no_tta_bfloat16": t3 - t2,
        "bfloat16_sign_agreement": float(((bf16 > 0) == (no_tta > 0)).float().mean()),
        "peak_gpu_mb": _peak_mb(),
        "finite": bool(torch.isfinite(no_tta).all() and torch.isfinite(tta).all() and torch.isfinite(bf16).all()),
    }


def stunet_training_step(variant: str, batch: int = 2) -> dict:
    from gliofit.segmentation.stunet import STUNet

    torch.manual_seed(0)
    net = STUNet.from_variant(variant, in_channels=4, num_classes=3).cuda().train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    x = torch.randn((batch, 4, *PATCH), device="cuda")
    y = (torch.rand((batch, 3, *PATCH), device="cuda") > 0.5).float()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(4):
        _sync()
        t0 = time.perf_counter()
        with torch.autocast("cuda"):
            out = net(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync()
        times.append(time.perf_counter() - t0)
    return {"seconds_per_step": float(np.median(times[1:])), "batch": batch, "peak_gpu_mb": _peak_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer simulations, STU-Net-B only")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device is visible to torch; nothing measured", file=sys.stderr)
        sys.exit(2)
    out: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    n2, n1 = (64, 16) if args.quick else (512, 96)
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-gpu-") as tmp:
        root = Path(tmp)
        for key, fn in [
            ("build_2mm_cuda", lambda: build_rate(2.0, n2, "cuda", root)),
            ("build_2mm_cpu", lambda: build_rate(2.0, min(n2, 32), "cpu", root)),
            ("build_1mm_cuda", lambda: build_rate(1.0, n1, "cuda", root)),
            ("simulate_1mm_T300", lambda: one_simulation(1.0, 300.0)),
            ("stunet_B_inference", lambda: stunet_inference("base")),
            ("stunet_L_inference", lambda: None if args.quick else stunet_inference("large")),
            ("stunet_B_training_step", lambda: stunet_training_step("base")),
        ]:
            t0 = time.perf_counter()
            try:
                out[key] = fn()
            except Exception as exc:  # noqa: BLE001 - one failed figure must not hide the others
                out[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"{key}: {json.dumps(out[key])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if (
        isinstance(out.get("build_2mm_cpu"), dict)
        and "simulations_per_hour" in out["build_2mm_cpu"]
        and "simulations_per_hour" in out.get("build_2mm_cuda", {})
    ):
        out["build_2mm_cuda_over_cpu"] = (
            out["build_2mm_cuda"]["simulations_per_hour"] / out["build_2mm_cpu"]["simulations_per_hour"]
        )
    out["peak_gpu_mb"] = torch.cuda.max_memory_reserved() / 2**20
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
