"""The published database-query method ("A for-loop is all you need", FACTS.md), as the baseline.

An exhaustive loop over EVERY entry of the database, no index: each entry's
density ``u`` is scored against the patient's masks with the soft
Bernoulli-style agreement

    f(u, θ) = 0.5 + 0.5 · sign(u − θ) · (1 − exp(−(u − θ)²))

summed over the voxels of the patient's whole-tumour mask (θ = θ_edema) and
over those of the core mask (θ = θ_core), the two sums added. The best entry
has the largest score. Voxels outside an entry's stored box have ``u = 0`` and
add ``f(0, θ)`` each, so the sum is evaluated on the box only plus a count.

The thresholds default to the database's (the ones its masks and volumes
mean); the published script used 0.2 and 0.6.
"""

from __future__ import annotations

import numpy as np

from gliofit.common.progress import progress_bar
from gliofit.inverse.query import DEFAULT_TOP_K, Matches, check_weights
from gliofit.simulations_db.dice import dice_scores
from gliofit.simulations_db.store import QUANT_SCALE, threshold_level

__all__ = ["soft_agreement", "soft_scores", "exhaustive_query", "BATCH"]

BATCH = 512
"""Entries read per step of the loop."""


def soft_agreement(u: np.ndarray, threshold: float) -> np.ndarray:
    """f(u, θ) = 0.5 + 0.5 sign(u − θ)(1 − exp(−(u − θ)²)), elementwise (float64)."""
    x = np.asarray(u, dtype=np.float64) - float(threshold)
    return 0.5 + 0.5 * np.sign(x) * (1.0 - np.exp(-x * x))


def _score_one(q: np.ndarray, n_q: int, bbox, u: np.ndarray, threshold: float) -> float:
    box = tuple(slice(bbox[i], bbox[i + 3]) for i in range(3))
    inside = q[box]
    n_in = int(np.count_nonzero(inside))
    return float(soft_agreement(u[inside], threshold).sum()) + (n_q - n_in) * float(soft_agreement(0.0, threshold))


def soft_scores(wt: np.ndarray, core: np.ndarray, crops, thresholds: tuple[float, float]) -> np.ndarray:
    """(n,) soft scores of entries given as ``[(bbox, uint8 crop)]`` against (X, Y, Z) bool masks."""
    n_wt, n_core = int(np.count_nonzero(wt)), int(np.count_nonzero(core))
    out = np.empty(len(crops))
    for i, (bbox, crop) in enumerate(crops):
        u = crop.astype(np.float32) / QUANT_SCALE
        out[i] = _score_one(wt, n_wt, bbox, u, thresholds[0]) + _score_one(core, n_core, bbox, u, thresholds[1])
    return out


def exhaustive_query(
    db,
    wt: np.ndarray,
    core: np.ndarray,
    *,
    thresholds: tuple[float, float] | None = None,
    top_k: int = DEFAULT_TOP_K,
    weights=(0.5, 0.5),
    progress: bool = False,
) -> Matches:
    """Score every entry with the soft agreement; the ``top_k`` best by score, with their exact Dice.

    Parameters
    ----------
    db : an open database.
    wt, core : (X, Y, Z) bool query masks on the database grid.
    thresholds : (edema, core) of the score (default: the database's).
    top_k : how many of the best-scored entries to return (Dice computed for these).
    weights : (whole tumour, core) weights of the reported mean Dice.
    progress : show a progress bar.

    Returns
    -------
    :class:`~gliofit.inverse.query.Matches` ordered by soft score (``score``), ties by entry id.
    """
    w = check_weights(weights)
    th = thresholds or (float(db.manifest.thresholds["edema"]), float(db.manifest.thresholds["core"]))
    all_ids = db.entries["id"]
    scores = np.empty(len(all_ids))
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("exhaustive query", total=len(all_ids))
        for start in range(0, len(all_ids), BATCH):
            ids = all_ids[start : start + BATCH]
            scores[start : start + len(ids)] = soft_scores(wt, core, db.read_entries(ids), th)
            bar.update(task, advance=len(ids))
    order = np.lexsort((all_ids, -scores))[: max(1, int(top_k))]
    ids = all_ids[order]
    le, lc = threshold_level(th[0]), threshold_level(th[1])
    crops = db.read_entries(ids)
    dice = dice_scores(wt, core, [(b[:3], c >= le, c >= lc) for b, c in crops]).astype(np.float64)
    return Matches(ids, dice, np.tile(np.asarray(th, dtype=np.float64), (len(ids), 1)), scores[order], w, len(all_ids))
