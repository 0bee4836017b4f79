"""Benchmark: our Fisher–Kolmogorov solver against a plain NumPy explicit-Euler solver.

Same atlas grid, same equation, same parameters, in one process. Prints ms per
step, voxel-updates per second, the speed ratio per simulation, the Dice of the
0.25 and 0.675 masks between the two (and of each against a fine-step
reference), the per-step cost of a full-grid step against the memory
bandwidth measured here, and a refinement-sized batch on one thread against
the same batch split over the cores. Ends with one line ``BENCH {json}``.

    python benchmarks/solver.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.growth.solver import SolverConfig, simulate_one
from gliofit.growth.stencil import DiffusionField, seed_density

D, RHO, ORIGIN = 0.5, 0.05, (-30.0, -10.0, 20.0)
TIMES = (100.0, 300.0)
"""The issue's T = 100 days (a small, barely visible tumour: no core yet) and 300 days (core visible)."""


# ---------------------------------------------------------------- the baseline
def numpy_explicit_euler(
    grid, D_w: float, rho: float, T_days: float, origin, ratio: float = 10.0, dt_fraction: float = 0.9
) -> tuple[np.ndarray, int, float]:
    """Straightforward NumPy explicit Euler on the whole grid at ``dt_fraction`` of its CFL step.

    Returns (density, steps, seconds).
    """
    domain = grid.domain
    kappa = np.where(domain, grid.wm + grid.gm / ratio, 0.0).astype(np.float32) * D_w
    faces, diag = [], np.zeros(grid.shape, np.float32)
    for axis, h in enumerate(grid.spacing_mm):
        a = np.moveaxis(kappa, axis, 0)
        m = np.moveaxis(domain, axis, 0)
        k = np.where(m[1:] & m[:-1], 0.5 * (a[1:] + a[:-1]), 0.0).astype(np.float32) / h**2
        faces.append(k)
        dg = np.moveaxis(diag, axis, 0)
        dg[1:] += k
        dg[:-1] += k
    dt_cfl = 1.0 / float(diag.max())
    dt = dt_fraction * min(dt_cfl, 1.0 / rho)
    u = seed_density(grid, origin, 1.5, 1.0).numpy() * domain
    t0 = time.perf_counter()
    t, steps = 0.0, 0
    while t < T_days - 1e-9:
        step = min(dt, T_days - t)
        lap = np.zeros_like(u)
        for axis in range(3):
            v = np.moveaxis(u, axis, 0)
            flux = faces[axis] * (v[1:] - v[:-1])
            lv = np.moveaxis(lap, axis, 0)
            lv[:-1] += flux
            lv[1:] -= flux
        u = u + step * (lap + rho * u * (1.0 - u))
        t += step
        steps += 1
    return np.clip(u, 0, 1), steps, time.perf_counter() - t0


# ---------------------------------------------------------------- helpers
def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks; 1.0 when both are empty (they agree)."""
    total = float(a.sum() + b.sum())
    return 1.0 if total == 0 else round(2.0 * float((a & b).sum()) / total, 4)


def dices(u: np.ndarray, v: np.ndarray) -> list[float]:
    return [dice(u >= th, v >= th) for th in (0.25, 0.675)]


def bandwidth_gb_s() -> float:
    """Sustained copy bandwidth (read + write) of a 256 MiB float32 array, GB/s."""
    x = torch.ones(64 * 1024 * 1024)
    y = torch.empty_like(x)
    y.copy_(x)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        y.copy_(x)
        best = min(best, time.perf_counter() - t)
    return 2 * x.numel() * 4 / best / 1e9


def full_grid_step_ms(grid, fused: bool, repeats: int = 5) -> float:
    """ms of one explicit step on the whole grid (no active box), eager or fused."""
    from gliofit.growth import kernels

    field = DiffusionField.from_grid(grid, 10.0)
    u = torch.rand((1,) + grid.shape) * field.domain
    sl = (slice(None),) + tuple(slice(0, n) for n in grid.shape)
    Dt, rho, dt = torch.full((1, 1, 1, 1), D), torch.full((1, 1, 1, 1), RHO), torch.tensor(0.1)
    faces = field.box_faces(sl)
    if fused:
        step = kernels.compiled(kernels.euler_step)
        run = lambda: step(u, *faces, Dt, rho, dt)  # noqa: E731
    else:

        def run():
            du = field.apply(u, sl) * Dt
            du.addcmul_(rho * u, 1.0 - u)
            return u + du * 0.1

    run()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def timed_ours(grid, T: float, fused: bool) -> tuple[np.ndarray, int, float]:
    """Our solver (default RKL2 settings), eager or with fused compiled kernels: (density, steps, seconds)."""
    steps: list[int] = []
    cfg = SolverConfig(compile=fused)
    t = time.perf_counter()
    u = simulate_one(grid, D, RHO, ORIGIN, T, config=cfg, on_step=lambda *_: steps.append(1))
    return u, len(steps), time.perf_counter() - t


def case(grid, T: float, with_reference: bool, matched: bool) -> dict:
    """Baseline and ours on one grid to time ``T`` days (and a fine-step reference)."""
    voxels = int(np.prod(grid.shape))
    base, steps, base_s = numpy_explicit_euler(grid, D, RHO, T, ORIGIN)
    ours, ours_steps, eager_s = timed_ours(grid, T, fused=False)
    fused, _, fused_s = timed_ours(grid, T, fused=True)
    out = {
        "spacing_mm": float(grid.spacing_mm[0]),
        "T_days": T,
        "grid": list(grid.shape),
        "voxels": voxels,
        "visible_voxels": [int((ours >= th).sum()) for th in (0.25, 0.675)],
        "baseline_steps": steps,
        "baseline_s": round(base_s, 3),
        "baseline_ms_per_step": round(1e3 * base_s / steps, 2),
        "baseline_voxel_updates_per_s": round(voxels * steps / base_s),
        "ours_steps": ours_steps,
        "ours_eager_s": round(eager_s, 3),
        "ours_fused_s": round(fused_s, 3),
        "speed_ratio_eager": round(base_s / eager_s, 1),
        "speed_ratio_fused": round(base_s / fused_s, 1),
        "dice_ours_vs_baseline": dices(ours, base),
        "max_abs_fused_vs_eager": float(np.abs(fused - ours).max()),
    }
    if with_reference:
        ref = simulate_one(grid, D, RHO, ORIGIN, T, config=SolverConfig(method="euler", dt_days=0.05, compile=True))
        out["dice_ours_vs_fine_reference"] = dices(ours, ref)
        out["dice_baseline_vs_fine_reference"] = dices(base, ref)
        if matched:  # the baseline at a step small enough to be as accurate as ours
            fine_base, fine_steps, fine_s = numpy_explicit_euler(grid, D, RHO, T, ORIGIN, dt_fraction=0.9 / 8)
            out["baseline_cfl_over_8"] = {
                "steps": fine_steps,
                "s": round(fine_s, 3),
                "dice_vs_fine_reference": dices(fine_base, ref),
                "speed_ratio_fused": round(fine_s / fused_s, 1),
            }
    return out


def batch_on_threads(grid, threads: int, repeats: int) -> dict:
    """A refinement-sized batch (8 simulations around one point) on 1 thread and on ``threads`` (the batch
    split into groups), interleaved; median seconds and whether the snapshots agree bit for bit."""
    from gliofit.growth.solver import simulate

    f = np.exp(np.linspace(-0.4, 0.4, 8))
    args = (grid, D * f, RHO / f, [ORIGIN] * 8, [[TIMES[0], TIMES[1]]] * 8)
    seconds: dict[int, list[float]] = {1: [], threads: []}
    out = {}
    before = torch.get_num_threads()
    for _ in range(repeats):
        for n in (1, threads):
            torch.set_num_threads(n)
            t = time.perf_counter()
            out[n] = simulate(*args)
            seconds[n].append(time.perf_counter() - t)
    torch.set_num_threads(before)
    s1, sn = float(np.median(seconds[1])), float(np.median(seconds[threads]))
    return {
        "grid": list(grid.shape),
        "threads": threads,
        "seconds_1_thread": round(s1, 3),
        f"seconds_{threads}_threads": round(sn, 3),
        "speedup": round(s1 / sn, 2),
        "identical": bool(np.array_equal(out[1], out[threads])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 mm only (well under a minute)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for ours (default 1: the NumPy baseline runs on one core too)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    atlas = load_atlas()
    results: dict = {
        "parameters": {"D_mm2_per_day": D, "rho_per_day": RHO, "T_days": list(TIMES), "origin_mm": ORIGIN},
        "threads": torch.get_num_threads(),
        "cases": [],
    }
    for spacing in [2.0] if args.quick else [2.0, 1.0]:
        grid = resample_atlas(atlas, spacing)
        t = time.perf_counter()
        # compile (cached on disk), for a box inside the grid and one spanning it (two kernel variants)
        simulate_one(grid, D, RHO, ORIGIN, max(TIMES), config=SolverConfig(compile=True))
        results.setdefault("compile_s", {})[f"{spacing:g}mm"] = round(time.perf_counter() - t, 1)
        for T in TIMES:
            r = case(grid, T, with_reference=not (args.quick and T > 100), matched=not args.quick and spacing == 2.0)
            results["cases"].append(r)
            print(
                f"{spacing} mm, T {T:g} d, grid {r['grid']}: baseline {r['baseline_steps']} steps, {r['baseline_ms_per_step']} ms/step, "
                f"{r['baseline_voxel_updates_per_s'] / 1e6:.0f} M voxel-updates/s, {r['baseline_s']} s | ours "
                f"{r['ours_steps']} steps, eager {r['ours_eager_s']} s ({r['speed_ratio_eager']}x), fused "
                f"{r['ours_fused_s']} s ({r['speed_ratio_fused']}x) | Dice (0.25, 0.675) "
                f"ours vs baseline {r['dice_ours_vs_baseline']} | vs fine reference: ours "
                f"{r.get('dice_ours_vs_fine_reference')}, baseline {r.get('dice_baseline_vs_fine_reference')}"
                + (f" | baseline at CFL/8: {r['baseline_cfl_over_8']}" if "baseline_cfl_over_8" in r else ""),
                flush=True,
            )
    cores = max(2, len(os.sched_getaffinity(0)))
    results["batch_on_threads"] = r = batch_on_threads(resample_atlas(atlas, 2.0), cores, 3 if args.quick else 5)
    print(
        f"batch of 8 at 2 mm: 1 thread {r['seconds_1_thread']} s, {cores} threads {r[f'seconds_{cores}_threads']} s "
        f"({r['speedup']}x), identical: {r['identical']}",
        flush=True,
    )
    bw = bandwidth_gb_s()
    grid = resample_atlas(atlas, 2.0 if args.quick else 1.0)
    bound_ms = 20.0 * np.prod(grid.shape) / (bw * 1e9) * 1e3  # read u + 3 face arrays, write u: 20 B/voxel
    eager_ms = full_grid_step_ms(grid, fused=False)
    fused_ms = full_grid_step_ms(grid, fused=True)
    results["bandwidth"] = {
        "copy_GB_per_s": round(bw, 1),
        "grid": list(grid.shape),
        "bound_ms_per_step": round(float(bound_ms), 2),
        "eager_ms_per_step": round(eager_ms, 2),
        "fused_ms_per_step": round(fused_ms, 2),
        "eager_over_bound": round(eager_ms / bound_ms, 2),
        "fused_over_bound": round(fused_ms / bound_ms, 2),
    }
    print(
        f"full-grid step on {list(grid.shape)}: bandwidth {bw:.1f} GB/s -> bound {bound_ms:.2f} ms; "
        f"eager {eager_ms:.2f} ms ({eager_ms / bound_ms:.1f}x), fused {fused_ms:.2f} ms ({fused_ms / bound_ms:.1f}x)"
    )
    print("BENCH " + json.dumps(results))


if __name__ == "__main__":
    main()
