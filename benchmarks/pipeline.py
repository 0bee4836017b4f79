"""Benchmark: one phantom patient through the whole pipeline, seconds per stage.

A phantom patient (four MRI modalities rendered from a tumour grown by our solver, BraTS 2023 folder)
on the 1 mm atlas grid goes through :func:`gliofit.pipelines.run.run_patient`: registration (affine +
SyN), query, density, plan, report. Segmentation is timed separately with STU-Net S and B (random
weights: speed only; their labels are meaningless, so the pipeline uses the phantom's own
segmentation) on the same four modalities; end to end = segmentation + the rest.

A first, untimed run warms imports and caches. Baseline, in the same process: the same pipeline with the published method's query (an exhaustive
loop over every database entry with the soft Bernoulli score, ``method="exhaustive"``). The ratio is
baseline end to end / ours.

Targets: end to end <= 45 s on two cores with STU-Net-S (issue 13), <= 5 min with B (issue 6).

    python benchmarks/pipeline.py [--quick] [--db DB] [--variants small,base] [--precision auto,bfloat16]

``--precision``: the segmentation network's arithmetic, each timed (``segment(precision=...)``).

``--db`` defaults to the demo database (built once under ~/.cache/gliofit, about 2 minutes). ``--quick``
uses a 60-simulation 4 mm database, a 2 mm patient and STU-Net-S only. Ends with ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from _shared import benchmark_database

from gliofit.pipelines.run import run_patient
from gliofit.segmentation.checkpoints import save_checkpoint
from gliofit.segmentation.phantoms import make_phantoms
from gliofit.segmentation.predict import segment
from gliofit.segmentation.stunet import STUNet
from gliofit.growth.atlas import load_atlas

TARGET_S = {"small": 45.0, "base": 300.0}
"""End-to-end targets, seconds."""


def _segmentation_seconds(variant: str, precision: str, images: tuple[Path, ...], tmp: Path) -> float:
    torch.manual_seed(0)
    net = STUNet.from_variant(variant, in_channels=4, num_classes=3)
    model = save_checkpoint(net, tmp / f"{variant}.pth", variant=variant, patch_size=(128, 128, 128))
    t0 = time.perf_counter()
    segment(*images, model, device="cpu", tta=False, precision=precision)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small database, 2 mm patient, STU-Net-S only")
    parser.add_argument("--db", help="database directory (default: the demo database)")
    parser.add_argument("--variants", default=None, help="comma-separated STU-Net variants (default small,base)")
    parser.add_argument("--registration", default="syn", help="syn, affine or none")
    parser.add_argument("--precision", default="auto", help="comma-separated segmentation precisions (auto, bfloat16)")
    args = parser.parse_args()
    variants = (args.variants or ("small" if args.quick else "small,base")).split(",")
    atlas = load_atlas()
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-pipeline-") as td:
        tmp = Path(td)
        db = benchmark_database(args.db, args.quick, tmp)
        t0 = time.perf_counter()
        [folder] = make_phantoms(
            tmp / "COHORT",
            1,
            seed=5,
            resolution_mm=2.0 if args.quick else None,
            atlas=atlas,
            sim_resolution_mm=2.0 if args.quick else 1.0,
        )
        phantom_s = time.perf_counter() - t0
        images = tuple(
            sorted(folder.glob("*-t1n.nii.gz"))
            + sorted(folder.glob("*-t1c.nii.gz"))
            + sorted(folder.glob("*-t2w.nii.gz"))
            + sorted(folder.glob("*-t2f.nii.gz"))
        )
        run_patient(folder, db, tmp / "WARMUP", registration=args.registration, atlas=atlas)  # imports, caches
        base = run_patient(
            folder, db, tmp / "BASELINE", registration=args.registration, method="exhaustive", atlas=atlas
        )
        ours = run_patient(folder, db, tmp / "OURS", registration=args.registration, atlas=atlas)
        seg_s = {(v, p): _segmentation_seconds(v, p, images, tmp) for v in variants for p in args.precision.split(",")}
    t_ours, t_base = ours["timings_s"], base["timings_s"]
    rest = t_ours["total"] - t_ours["segmentation"]
    rest_base = t_base["total"] - t_base["segmentation"]
    end_to_end = {f"{v}/{p}": round(rest + s, 2) for (v, p), s in seg_s.items()}
    print(
        f"patient: phantom at {'2' if args.quick else '1'} mm (made in {phantom_s:.1f} s), database {db} "
        f"({ours['database']['entries']} entries), registration {args.registration}"
    )
    print("stage          ours (s)   baseline (s)")
    for k in ("load", "registration", "query", "density", "plan", "report"):
        print(f"{k:13s} {t_ours[k]:9.2f} {t_base[k]:13.2f}")
    for (v, p), s in seg_s.items():
        target, total = TARGET_S.get(v), end_to_end[f"{v}/{p}"]
        print(
            f"segmentation STU-Net-{v} ({p}): {s:.1f} s -> end to end {total:.1f} s"
            + (f" (target <= {target:.0f} s: {'met' if total <= target else 'MISSED'})" if target else "")
        )
    ratio = (rest_base) / rest
    print(
        f"without segmentation: ours {rest:.1f} s, baseline (exhaustive query) {rest_base:.1f} s -> {ratio:.2f}x; "
        f"query alone {t_base['query'] / max(t_ours['query'], 1e-9):.0f}x"
    )
    print(f"fit: ours Dice mean {ours['fit']['dice_mean']:.3f}, baseline {base['fit']['dice_mean']:.3f}")
    bench = {
        "quick": args.quick,
        "registration": args.registration,
        "entries": ours["database"]["entries"],
        "stages_s": t_ours,
        "baseline_stages_s": t_base,
        "segmentation_s": {f"{v}/{p}": round(s, 2) for (v, p), s in seg_s.items()},
        "end_to_end_s": end_to_end,
        "targets_s": {v: TARGET_S.get(v) for v in variants},
        "speed_ratio_vs_baseline": round(ratio, 2),
        "query_ratio_vs_baseline": round(t_base["query"] / max(t_ours["query"], 1e-9), 1),
        "dice_mean": ours["fit"]["dice_mean"],
        "baseline_dice_mean": base["fit"]["dice_mean"],
        "threads": torch.get_num_threads(),
    }
    print("BENCH " + json.dumps(bench))


if __name__ == "__main__":
    main()
