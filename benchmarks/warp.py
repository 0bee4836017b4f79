"""Benchmark: volumes through an ANTs registration, our resampler against ``ants.apply_transforms``.

A phantom patient (1 mm; ``--quick``: 2 mm) is registered to the ICBM152 atlas (affine + SyN, as
``gliofit run`` does); then, in one process, each volume is moved both ways with both engines, interleaved:
the patient T1 (trilinear) and its tumour mask (nearest) onto the 1 mm atlas grid, the atlas T1 and brain
back onto the patient grid; and the registration's 2 mm copies (``ants.resample_image`` against
:func:`gliofit.pipelines.registration.coarse_image`). Reports seconds, the ratio and the largest difference
(relative to the volume's range; nearest: the fraction of voxels that differ). Ends with ``BENCH {json}``.

    python benchmarks/warp.py [--quick] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _best_seconds(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2 mm phantom")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per engine and case (best kept)")
    args = ap.parse_args()
    import ants
    import nibabel as nib

    from gliofit.growth.atlas import load_atlas
    from gliofit.pipelines.registration import ants_array, ants_image, coarse_image, register_to_atlas_ants
    from gliofit.segmentation.phantoms import make_phantoms

    atlas = load_atlas()
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-warp-") as td:
        [folder] = make_phantoms(
            Path(td), 1, seed=5, atlas=atlas, resolution_mm=2.0 if args.quick else None, sim_resolution_mm=2.0
        )
        t1_img = nib.load(next(folder.glob("*-t1n.nii.gz")))
        t1, affine = np.asarray(t1_img.dataobj, np.float32), t1_img.affine
        tumour = np.asarray(nib.load(next(folder.glob("*-seg.nii.gz"))).dataobj) > 0
        t0 = time.perf_counter()
        reg = register_to_atlas_ants(t1, affine, atlas, exclude=tumour)
        reg_s = time.perf_counter() - t0
        inv_flags = [t.endswith(".mat") for t in reg.inv_transforms]
        cases = [
            ("patient T1 -> atlas", t1, affine, atlas.shape, atlas.affine, reg.fwd_transforms, None, False),
            ("tumour -> atlas", tumour, affine, atlas.shape, atlas.affine, reg.fwd_transforms, None, True),
            ("atlas T1 -> patient", atlas.t1, atlas.affine, t1.shape, affine, reg.inv_transforms, inv_flags, False),
            ("brain -> patient", atlas.domain, atlas.affine, t1.shape, affine, reg.inv_transforms, inv_flags, True),
        ]
        rows = []
        for name, vol, src_aff, shape, dst_aff, transforms, invert, nearest in cases:
            flags = invert or [False] * len(transforms)

            def stock(
                vol=vol,
                src_aff=src_aff,
                shape=shape,
                dst_aff=dst_aff,
                transforms=transforms,
                flags=flags,
                nearest=nearest,
            ):
                return ants_array(
                    ants.apply_transforms(
                        ants_image(np.zeros(shape, np.float32), dst_aff),
                        ants_image(vol, src_aff),
                        list(transforms),
                        interpolator="nearestNeighbor" if nearest else "linear",
                        whichtoinvert=flags,
                        singleprecision=True,
                    )
                )

            def ours(vol=vol, src_aff=src_aff, shape=shape, dst_aff=dst_aff, to_atlas=invert is None):
                if to_atlas:
                    return reg.to_atlas(vol, src_aff, atlas)
                return reg.to_patient(vol, atlas, shape, dst_aff)

            ours()  # compiles or loads the kernel once
            rows.append(_row(name, nearest, _best_seconds(stock, args.repeats), _best_seconds(ours, args.repeats)))
        for name, vol, aff, nearest in (("T1 2 mm copy", t1, affine, False), ("mask 2 mm copy", tumour, affine, True)):
            vol32 = vol.astype(np.float32)

            def stock_coarse(vol32=vol32, aff=aff, nearest=nearest):
                img = ants.resample_image(
                    ants_image(vol32, aff), (2.0,) * 3, use_voxels=False, interp_type=int(nearest)
                )
                return ants_array(img)

            def ours_coarse(vol32=vol32, aff=aff, nearest=nearest):
                return ants_array(coarse_image(vol32, aff, 2.0, nearest=nearest))

            if min(np.linalg.norm(aff[:3, :3], axis=0)) < 2.0 - 1e-6:
                rows.append(
                    _row(
                        name,
                        nearest,
                        _best_seconds(stock_coarse, args.repeats),
                        _best_seconds(ours_coarse, args.repeats),
                    )
                )
    for r in rows:
        print(
            f"{r['case']:22s} ANTs {r['ants_s']:.3f} s, ours {r['ours_s']:.3f} s ({r['speedup']:.1f}x); "
            + (
                f"voxels that differ {r['differing_fraction']:.2e}"
                if r["nearest"]
                else f"largest difference {r['max_rel_diff']:.1e} of the range"
            )
        )
    total_ants, total_ours = sum(r["ants_s"] for r in rows), sum(r["ours_s"] for r in rows)
    print(f"registration (SyN) {reg_s:.1f} s; all cases: ANTs {total_ants:.2f} s, ours {total_ours:.2f} s")
    bench = {
        "quick": args.quick,
        "patient_shape": list(t1.shape),
        "registration_s": round(reg_s, 2),
        "ants_total_s": round(total_ants, 3),
        "ours_total_s": round(total_ours, 3),
        "speedup": round(total_ants / total_ours, 2),
        "rows": rows,
    }
    print("BENCH " + json.dumps(bench))


def _row(case: str, nearest: bool, stock: tuple[float, np.ndarray], ours: tuple[float, np.ndarray]) -> dict:
    (s_ants, a), (s_ours, b) = stock, ours
    span = float(np.abs(a).max()) or 1.0
    return {
        "case": case,
        "nearest": nearest,
        "shape": list(a.shape),
        "ants_s": round(s_ants, 4),
        "ours_s": round(s_ours, 4),
        "speedup": round(s_ants / s_ours, 2),
        "max_rel_diff": float(np.abs(a - b).max()) / span,
        "differing_fraction": float((a != b).mean()),
    }


if __name__ == "__main__":
    main()
