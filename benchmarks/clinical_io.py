"""Clinical input and output on one phantom DICOM study: import, preprocess, RTSTRUCT export.

A phantom case (1 mm images; ``--quick``: 3 mm) is written as an oblique DICOM study with a skull-like
shell, a bias field, a known rigid motion of T1/T2/FLAIR against the T1c and a localiser
(:func:`gliofit.pipelines.dicom_phantom.write_dicom_study`; FLAIR 1 x 1 x 3 mm, the others 1 mm;
``--quick`` doubles every spacing). In one process:

- ``import-dicom`` (pydicom headers + rule table + SimpleITK series reader) against the baseline
  SimpleITK-only conversion (GDCM series discovery, every series read, no checks), seconds and ratio;
- ``preprocess`` at 1 mm (``--quick``: 2 mm) against the baseline without N4 (``--no-n4``), seconds and
  ratio; target: import + preprocess <= 60 s on two cores;
- brain-mask Dice against the phantom's brain (target >= 0.95);
- co-registration error: mean distance, over the phantom brain, between the recovered and the true
  T1c -> modality map (target <= 1 mm);
- RTSTRUCT + SEG export of the phantom's labels (mapped onto the preprocessed grid), a density
  (the whole tumour smoothed) and two targets, seconds; round-trip Dice of every structure read back and
  rasterised on the T1c series (target >= 0.95).

    python benchmarks/clinical_io.py [--quick] [--seed S] [--threads N]

Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _sitk_only(study: Path, out: Path) -> int:
    """The baseline conversion: every GDCM series of the folder read and written as NIfTI."""
    import SimpleITK as sitk

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for folder in sorted({p.parent for p in study.rglob("*.dcm")}):
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            sitk.WriteImage(reader.Execute(), str(out / f"{n:02d}.nii.gz"))
            n += 1
    return n


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two masks; None when both are empty."""
    n = int(a.sum() + b.sum())
    return float(2.0 * (a & b).sum() / n) if n else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 mm phantom, 2 mm DICOM and 2 mm preprocessing.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="ITK threads (ANTs, SimpleITK).")
    args = ap.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)

    from scipy import ndimage

    from gliofit.common.grids import resample_linear, voxel_to_world
    from gliofit.common.nifti import load_volume
    from gliofit.growth.atlas import load_atlas
    from gliofit.pipelines.dicom_import import import_dicom
    from gliofit.pipelines.dicom_phantom import write_dicom_study
    from gliofit.pipelines.dicom_rt import (
        Structure,
        load_reference,
        on_reference,
        read_rtstruct,
        write_rtstruct,
        write_seg,
    )
    from gliofit.pipelines.preprocess import preprocess
    from gliofit.segmentation.phantoms import make_phantoms

    phantom_mm, scale, pre_mm = (3.0, 2.0, 2.0) if args.quick else (1.0, 1.0, 1.0)
    atlas = load_atlas()
    root = Path(tempfile.mkdtemp(prefix="gliofit-clinical-"))
    try:
        case = make_phantoms(
            root / "C", 1, seed=args.seed, resolution_mm=phantom_mm, atlas=atlas, sim_resolution_mm=max(phantom_mm, 2.0)
        )[0]
        study = write_dicom_study(case, root / "S", seed=args.seed, pixel_scale=scale)

        t = time.perf_counter()
        _sitk_only(study.folder, root / "B")
        t_base_import = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        import_dicom(study.folder, root / "P001", progress=False)
        t_import, c_import = time.perf_counter() - t, time.process_time() - c

        t = time.perf_counter()
        preprocess(root / "P001", root / "NO_N4" / "P001", spacing_mm=pre_mm, atlas=atlas, bias_correction=False)
        t_base_pre = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        rec = preprocess(root / "P001", root / "PRE" / "P001", spacing_mm=pre_mm, atlas=atlas)
        t_pre, c_pre = time.perf_counter() - t, time.process_time() - c

        mask, grid = load_volume(root / "PRE" / "P001" / "brain_mask.nii.gz")
        brain, brain_aff = study.brain
        truth = resample_linear(brain.astype(np.float32), brain_aff, grid, mask.shape) >= 0.5
        brain_dice = _dice(mask > 0, truth)
        pts = voxel_to_world(brain_aff, np.argwhere(brain).astype(float))
        pts = np.c_[pts, np.ones(len(pts))]
        coreg = {}
        for s in (s for s in rec["steps"] if s["step"] == "register"):
            est, true = np.asarray(s["matrix_ras"]), np.linalg.inv(study.motion[s["modality"]])
            coreg[s["modality"]] = round(float(np.linalg.norm((pts @ est.T - pts @ true.T)[:, :3], axis=1).mean()), 4)

        seg, seg_aff = load_volume(next(case.glob("*-seg.nii.gz")))
        lab = resample_linear(np.rint(seg).astype(np.uint8), seg_aff, grid, mask.shape, order=0)
        wt = lab > 0
        density = ndimage.gaussian_filter(wt.astype(np.float32), 3.0 / pre_mm)
        dist = ndimage.distance_transform_edt(~np.isin(lab, (1, 3)), sampling=pre_mm)
        structures = [
            Structure("Target standard", (dist <= 15.0).astype(np.float32) * (mask > 0), grid, kind="CTV"),
            Structure("Whole tumour", wt.astype(np.float32), grid, kind="GTV"),
            Structure("Enhancing", (lab == 3).astype(np.float32), grid, kind="GTV"),
            Structure("Necrosis", (lab == 1).astype(np.float32), grid, kind="GTV"),
        ]
        structures += [Structure(f"Density {p}%", density, grid, level=p / 100) for p in (1, 10, 30)]
        t = time.perf_counter()
        ref = load_reference(study.series["t1c"])
        write_rtstruct(structures, ref, root / "rtstruct.dcm")
        write_seg(
            {s.name: s for s in structures[2:4]}, sorted(study.series["t1c"].glob("*.dcm")), ref, root / "seg.dcm"
        )
        t_rt = time.perf_counter() - t
        back = read_rtstruct(root / "rtstruct.dcm", ref)
        rt_dice = {s.name: _dice(back[s.name], on_reference(s, ref)) for s in structures}
        rt_dice = {k: round(v, 4) for k, v in rt_dice.items() if v is not None}  # empty structures left out
    finally:
        shutil.rmtree(root, ignore_errors=True)

    out = {
        "quick": args.quick,
        "threads": args.threads,
        "phantom_mm": phantom_mm,
        "dicom_pixel_scale": scale,
        "preprocess_mm": pre_mm,
        "import_s": round(t_import, 2),
        "baseline_sitk_only_import_s": round(t_base_import, 2),
        "import_ratio": round(t_import / max(t_base_import, 1e-9), 2),
        "preprocess_s": round(t_pre, 2),
        "baseline_no_n4_preprocess_s": round(t_base_pre, 2),
        "preprocess_ratio": round(t_pre / max(t_base_pre, 1e-9), 2),
        "import_plus_preprocess_s": round(t_import + t_pre, 2),
        "import_plus_preprocess_cpu_s": round(c_import + c_pre, 2),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "target_import_plus_preprocess_s": 60.0,
        "brain_dice": round(brain_dice, 4),
        "target_brain_dice": 0.95,
        "coregistration_error_mm": coreg,
        "target_coregistration_mm": 1.0,
        "rtstruct_seg_export_s": round(t_rt, 2),
        "rtstruct_roundtrip_dice": rt_dice,
        "rtstruct_roundtrip_dice_min": min(rt_dice.values()),
        "target_roundtrip_dice": 0.95,
        "steps_s": {
            f"{s['step']} {s.get('modality', '')}".strip(): s["seconds"] for s in rec["steps"] if "seconds" in s
        },
    }
    print(json.dumps(out, indent=2))
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
