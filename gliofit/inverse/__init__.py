"""The inverse solver: tumour masks -> personalised growth-model parameters with uncertainty.

Modules: :mod:`.observation` (labels -> masks on the database grid), :mod:`.registration`
(patient T1 -> atlas), :mod:`.query` (FAISS candidates + exact Dice), :mod:`.baseline`
(the published exhaustive method), :mod:`.estimate` (best match + weighted summary),
:mod:`.density`, :mod:`.result` (:class:`Result`), :mod:`.api` (:func:`infer`).
"""

from gliofit.inverse.api import infer
from gliofit.inverse.result import Result

__all__ = ["infer", "Result"]
