"""The fast query: FAISS candidates -> volume pre-filter -> exact Dice (with a threshold search) -> ranking.

1. The query masks become a feature vector (:func:`~gliofit.simulations_db.features.query_features`)
   and the index proposes the ``top_k`` nearest entries.
2. Volume pre-filter: an entry whose whole-tumour volume (at the database's
   edema threshold) lies outside ``volume_window(|A|, min_dice)`` cannot reach
   whole-tumour Dice ``min_dice`` there, and is dropped (if nothing is left, none is).
3. Exact Dice of whole tumour and core for every remaining candidate, read
   from the stored (uint8) densities at each imaging threshold of a small grid
   (edema 0.15/0.25/0.35, core 0.55/0.675/0.8, inside the reference ranges of
   FACTS.md, plus the database's own). The whole-tumour Dice depends only on the
   edema threshold and the core Dice only on the core one, so the best pair of a
   candidate is found with 3 + 3 Dice counts, not 9.
4. Ranking by ``w_wt * dice_wt + w_core * dice_core`` (weights normalised,
   default 0.5/0.5), ties broken by entry id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gliofit.common.errors import InputError
from gliofit.simulations_db.dice import dice_scores, volume_window
from gliofit.simulations_db.features import FeatureSpec, query_features
from gliofit.simulations_db.store import threshold_level

__all__ = ["Matches", "EDEMA_GRID", "CORE_GRID", "DEFAULT_TOP_K", "DEFAULT_MIN_DICE", "query", "check_weights",
           "threshold_grid", "score_candidates", "rank"]

EDEMA_GRID = (0.15, 0.25, 0.35)
"""Whole-tumour (FLAIR) thresholds searched at query time (fraction of capacity)."""
CORE_GRID = (0.55, 0.675, 0.8)
"""Core (T1Gd) thresholds searched at query time."""
DEFAULT_TOP_K = 200
DEFAULT_MIN_DICE = 0.3
"""The volume pre-filter keeps entries that could still reach whole-tumour Dice 0.3."""


@dataclass
class Matches:
    """Scored database entries, best first.

    Attributes
    ----------
    ids : (n,) int64 entry ids.
    dice : (n, 2) float64 whole-tumour and core Dice on the database grid.
    thresholds : (n, 2) float64 edema and core thresholds at which ``dice`` was reached.
    score : (n,) float64 ranking score (weighted mean Dice, or the soft score of the baseline).
    weights : (w_wt, w_core) normalised.
    n_candidates : entries proposed (index) or visited (exhaustive).
    """

    ids: np.ndarray
    dice: np.ndarray
    thresholds: np.ndarray
    score: np.ndarray
    weights: tuple[float, float]
    n_candidates: int

    @property
    def mean_dice(self) -> np.ndarray:
        """(n,) weighted mean Dice."""
        return self.dice @ np.asarray(self.weights)

    def head(self, n: int) -> Matches:
        s = slice(0, int(n))
        return Matches(self.ids[s], self.dice[s], self.thresholds[s], self.score[s], self.weights, self.n_candidates)


def check_weights(weights) -> tuple[float, float]:
    """(w_wt, w_core) >= 0 with a positive sum, normalised to sum 1."""
    try:
        w = tuple(float(v) for v in weights)
    except (TypeError, ValueError):
        raise InputError(f"weights must be two numbers (whole tumour, core), got {weights!r}") from None
    if len(w) != 2 or min(w) < 0 or not np.isfinite(w).all() or sum(w) <= 0:
        raise InputError(f"weights must be two numbers >= 0 with a positive sum, got {weights!r}")
    return (w[0] / sum(w), w[1] / sum(w))


def threshold_grid(db_thresholds: dict, search: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The edema and core thresholds to try: the grids plus the database's, or the database's only."""
    te, tc = float(db_thresholds["edema"]), float(db_thresholds["core"])
    if not search:
        return (te,), (tc,)
    return tuple(sorted({*EDEMA_GRID, te})), tuple(sorted({*CORE_GRID, tc}))


def score_candidates(db, wt: np.ndarray, core: np.ndarray, ids: np.ndarray, edema: tuple[float, ...],
                     core_thresholds: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Best Dice of each entry over the thresholds.

    Returns
    -------
    dice : (n, 2) float64 best whole-tumour and core Dice; thresholds : (n, 2) float64 where reached.
    """
    n = len(ids)
    if n == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    if min(edema + core_thresholds) < 0.05:
        crops = db.read_entries(ids)
    else:
        crops = db.read_visible(ids)
    m = max(len(edema), len(core_thresholds))
    per = np.full((m, n, 2), -1.0)
    for j in range(m):
        le = threshold_level(edema[min(j, len(edema) - 1)])
        lc = threshold_level(core_thresholds[min(j, len(core_thresholds) - 1)])
        cands = [(bbox[:3], crop >= le, crop >= lc) for bbox, crop in crops]
        per[j] = dice_scores(wt, core, cands)
    e_idx = np.minimum(np.argmax(per[:len(edema), :, 0], axis=0), len(edema) - 1)
    c_idx = np.minimum(np.argmax(per[:len(core_thresholds), :, 1], axis=0), len(core_thresholds) - 1)
    rows = np.arange(n)
    dice = np.stack([per[e_idx, rows, 0], per[c_idx, rows, 1]], axis=1)
    th = np.stack([np.asarray(edema)[e_idx], np.asarray(core_thresholds)[c_idx]], axis=1)
    return dice, th


def rank(ids: np.ndarray, dice: np.ndarray, thresholds: np.ndarray, weights: tuple[float, float],
         n_candidates: int) -> Matches:
    """Order by weighted mean Dice (descending), ties by entry id."""
    score = dice @ np.asarray(weights)
    order = np.lexsort((ids, -score))
    return Matches(ids[order], dice[order], thresholds[order], score[order], weights, n_candidates)


def query(db, wt: np.ndarray, core: np.ndarray, *, top_k: int = DEFAULT_TOP_K, weights=(0.5, 0.5),
          thresholds_search: bool = True, min_dice: float = DEFAULT_MIN_DICE) -> Matches:
    """Rank database entries against the query masks (the index method).

    Parameters
    ----------
    db : an open :class:`~gliofit.simulations_db.database.Database`.
    wt, core : (X, Y, Z) bool query masks on the database grid.
    top_k : candidates taken from the index (>= 1).
    weights : (whole tumour, core) weights of the ranking score.
    thresholds_search : search the imaging thresholds per candidate (else the database's).
    min_dice : the volume pre-filter's Dice bound.

    Returns
    -------
    :class:`Matches` of the candidates that passed the pre-filter, best first.
    """
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1, got {top_k!r}", parameter="top_k")
    w = check_weights(weights)
    spec = FeatureSpec.from_dict(db.manifest.features)
    q = query_features(spec, wt, core)
    ids = db.index.search(q, int(top_k))[0]
    ids = ids[ids >= 0]
    n_candidates = len(ids)
    vol = db.entries["wt_voxels"][db.rows_of(ids)]
    lo, hi = volume_window(int(np.count_nonzero(wt)), min_dice)
    keep = (vol >= lo) & (vol <= hi)
    if keep.any():
        ids = ids[keep]
    edema, core_th = threshold_grid(db.manifest.thresholds, thresholds_search)
    dice, th = score_candidates(db, wt, core, ids, edema, core_th)
    return rank(ids, dice, th, w, n_candidates)
