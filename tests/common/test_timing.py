"""The stopwatch: stage seconds add up, the total covers them, a raising stage still counts."""

from __future__ import annotations

import time

import pytest

from gliofit.common.timing import Stopwatch


def test_stages_add_and_total_covers_them():
    watch = Stopwatch(("load", "query"))
    with watch.stage("load"):
        time.sleep(0.01)
    with watch.stage("load"):
        time.sleep(0.01)
    watch.add("query", 0.5)
    with pytest.raises(RuntimeError), watch.stage("report"):
        raise RuntimeError
    t = watch.timings()
    assert list(t) == ["load", "query", "report", "total"]
    assert t["load"] >= 0.02 and t["query"] == 0.5 and t["report"] >= 0.0
    assert t["total"] >= t["load"]
    assert watch.timings(ndigits=1)["query"] == 0.5
