"""Benchmark: gliofit's STU-Net sliding window against nnU-Net's stock ``nnUNetPredictor``.

Same network object (random weights, seeded), same normalised (C, Z, Y, X)
array, same settings (patch 128^3, step 0.5, Gaussian weighting, no mirroring,
CPU), in one process. Reports: labels equal (BraTS regions -> labels by the
same rule for both), time ours/stock, peak resident memory per engine, seconds
per case.

    python benchmarks/segmentation.py            # 4x240x240x155, STU-Net S and B (many minutes on 2 cores)
    python benchmarks/segmentation.py --quick    # 4x128^3, STU-Net S only (one tile)
    python benchmarks/segmentation.py --precision bfloat16   # ours under bfloat16 autocast, the stock in float32

With ``--precision bfloat16`` the labels are not expected to be equal everywhere: the benchmark also
reports where the region logits change sign (the largest stock logit magnitude among them).

Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time

import numpy as np
import torch

from gliofit.segmentation.mri import normalise_nonzero
from gliofit.segmentation.nnunet_inference import stock_predictor
from gliofit.segmentation import PRECISIONS
from gliofit.segmentation.predict import autocast_dtype, regions_to_labels, sliding_window_logits
from gliofit.segmentation.stunet import STUNet

PATCH = (128, 128, 128)


def synthetic_case(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """(4, X, Y, Z) float32 MRI-like volume: zero background, a brain ellipsoid, a lesion, noise."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij", sparse=True)
    brain = (xx / 0.75) ** 2 + (yy / 0.85) ** 2 + (zz / 0.8) ** 2 < 1
    lesion = (xx - 0.25) ** 2 + (yy + 0.1) ** 2 + (zz - 0.1) ** 2 < 0.04
    out = np.empty((4, *shape), np.float32)
    for c in range(4):
        out[c] = (300 + 80 * c + 40 * rng.standard_normal(shape, dtype=np.float32) + 200 * lesion) * brain
    return out


class PeakRSS:
    """Context manager sampling this process's resident memory every 20 ms; ``peak_mb`` afterwards."""

    def __init__(self) -> None:
        self.peak_mb, self._stop = 0.0, threading.Event()

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self.start_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def run_engine(kind: str, net: torch.nn.Module, x: torch.Tensor, precision: str = "auto") -> dict:
    """Labels, region logits, seconds and peak RSS of one engine on the normalised array ``x`` (C, Z, Y, X)."""
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        if kind == "ours":
            logits = sliding_window_logits(net, x, PATCH, autocast_dtype=autocast_dtype(precision))
        else:
            logits = stock_predictor(net, PATCH).predict_logits_from_preprocessed_data(x)
        labels = regions_to_labels(logits.float())
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "labels": labels,
        "logits": logits.float().numpy(),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": mem.peak_mb,
        "peak_rss_increase_mb": mem.peak_mb - mem.start_mb,
    }


def _best(runs: list[dict]) -> dict:
    """The repeat with the least wall time (the one least disturbed by other processes)."""
    return min(runs, key=lambda r: r["seconds"])


def _sign_changes(ours: np.ndarray, stock: np.ndarray) -> dict:
    """Where a region changes side of the label rule (logit > 0) between the engines: the fraction of voxels and
    how far from 0 the stock logit was there (largest and 99th percentile magnitude)."""
    flip = (ours > 0) != (stock > 0)
    mag = np.abs(stock[flip])
    return {
        "logit_sign_change_fraction": float(flip.any(axis=0).mean()),
        "stock_logit_at_sign_change_max": float(mag.max()) if mag.size else 0.0,
        "stock_logit_at_sign_change_p99": float(np.percentile(mag, 99)) if mag.size else 0.0,
    }


def compare(
    variant: str,
    x: torch.Tensor,
    brain: np.ndarray,
    with_stock: bool,
    repeats: int,
    stock_first: bool = False,
    precision: str = "auto",
) -> dict:
    """Run ours (and the stock predictor, interleaved) for one STU-Net variant with seeded random weights."""
    torch.manual_seed(0)
    net = STUNet.from_variant(variant, in_channels=4, num_classes=3).eval()
    runs: dict[str, list[dict]] = {"ours": [], "stock": []}
    for _ in range(repeats):
        order = ("stock", "ours") if stock_first else ("ours", "stock")
        for kind in order if with_stock else ("ours",):
            r = run_engine(kind, net, x, precision)
            runs[kind].append(r)
            print(
                f"[{variant}] {kind}: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, "
                f"peak RSS {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    ours = _best(runs["ours"])
    row = {
        "variant": variant,
        "precision_ours": precision,
        "seconds_ours": round(ours["seconds"], 2),
        "cpu_seconds_ours": round(ours["cpu_seconds"], 2),
        "peak_rss_mb_ours": round(ours["peak_rss_mb"]),
        "rss_increase_mb_ours": round(ours["peak_rss_increase_mb"]),
    }
    if with_stock:
        stock = _best(runs["stock"])
        same = ours["labels"] == stock["labels"]
        row.update(
            {
                "seconds_stock": round(stock["seconds"], 2),
                "cpu_seconds_stock": round(stock["cpu_seconds"], 2),
                "time_ratio": round(ours["seconds"] / stock["seconds"], 3),
                "cpu_time_ratio": round(ours["cpu_seconds"] / stock["cpu_seconds"], 3),
                "peak_rss_mb_stock": round(stock["peak_rss_mb"]),
                "rss_increase_mb_stock": round(stock["peak_rss_increase_mb"]),
                "labels_equal_fraction": float(same.mean()),
                "labels_equal_fraction_in_brain": float(same[brain].mean()),
                "foreground_fraction_ours": float((ours["labels"] > 0).mean()),
                **_sign_changes(ours["logits"], stock["logits"]),
            }
        )
        print(
            f"[{variant}] ratio ours/stock: wall {row['time_ratio']:.3f}, CPU {row['cpu_time_ratio']:.3f}; "
            f"labels equal {100 * same.mean():.4f}% (in brain {100 * same[brain].mean():.4f}%); a logit changes "
            f"sign at {100 * row['logit_sign_change_fraction']:.4f}% of voxels, where |stock logit| <= "
            f"{row['stock_logit_at_sign_change_max']:.3f} (99%: {row['stock_logit_at_sign_change_p99']:.3f})",
            flush=True,
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4x128^3 volume, STU-Net S only (< 1 minute)")
    ap.add_argument("--variants", default=None, help="comma list (default: small,base; quick: small)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per engine (quick: 2, full: 1)")
    ap.add_argument("--stock-first", action="store_true", help="run the stock predictor before ours")
    ap.add_argument("--no-stock-small", action="store_true", help="time only ours for S in the full run")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS, help="our network's arithmetic")
    args = ap.parse_args()
    shape = (128, 128, 128) if args.quick else (240, 240, 155)
    variants = (args.variants or ("small" if args.quick else "small,base")).split(",")
    data = synthetic_case(shape)
    brain = np.any(data != 0, axis=0).transpose(2, 1, 0)
    x = torch.from_numpy(np.ascontiguousarray(normalise_nonzero(data).transpose(0, 3, 2, 1)))
    del data
    print(
        f"case 4x{'x'.join(map(str, shape))}, patch {PATCH}, step 0.5, Gaussian, no mirroring, CPU, "
        f"{torch.get_num_threads()} threads, ours in precision {args.precision}",
        flush=True,
    )
    repeats = args.repeats or (2 if args.quick else 1)
    rows = [
        compare(
            v,
            x,
            brain,
            not (v == "small" and args.no_stock_small and not args.quick),
            repeats,
            args.stock_first,
            args.precision,
        )
        for v in variants
    ]
    main_row = next((r for r in rows if r["variant"] == "base"), rows[0])
    result = {
        "name": "segmentation",
        "quick": args.quick,
        "case_shape": [4, *shape],
        "device": "cpu",
        "precision_ours": args.precision,
        "threads": torch.get_num_threads(),
        "variant": main_row["variant"],
        "time_ratio": main_row.get("time_ratio"),
        "cpu_time_ratio": main_row.get("cpu_time_ratio"),
        "labels_equal_fraction": main_row.get("labels_equal_fraction"),
        "seconds_per_case": {r["variant"]: r["seconds_ours"] for r in rows},
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rows": rows,
    }
    print("BENCH " + json.dumps(result))


if __name__ == "__main__":
    main()
