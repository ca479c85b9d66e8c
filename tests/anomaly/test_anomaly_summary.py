"""Summaries over runs: quantiles as numpy computes them, the max SIC of the median curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowctl.anomaly.summary import (
    format_table,
    max_sic_of_median,
    quantile_summary,
    summarize_runs,
)
from flowctl.metrics.sic import max_sic, roc_curve


def test_summarize_runs_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    auc_c, sic_c = rng.random(10), 10 * rng.random(10)
    runs = [{"cathode": {"auc": auc_c[r], "max_sic": sic_c[r], "note": "x", "ok": True},
             "iad": {"auc": 0.9 + 0.01 * r}} for r in range(10)]
    runs[3]["cwola"] = {"auc": 0.7}
    runs[4]["cathode"]["max_sic"] = float("nan")         # a failed run is left out
    s = summarize_runs(runs)
    assert list(s) == ["cathode", "iad", "cwola"]
    assert set(s["cathode"]) == {"auc", "max_sic"}       # strings and booleans skipped
    for key, vals in (("auc", auc_c), ("max_sic", np.delete(sic_c, 4))):
        e = s["cathode"][key]
        assert e["n"] == len(vals)
        assert e["median"] == pytest.approx(np.median(vals), rel=1e-12)
        assert e["q16"] == pytest.approx(np.quantile(vals, 0.16), rel=1e-12)
        assert e["q84"] == pytest.approx(np.quantile(vals, 0.84), rel=1e-12)
    assert s["cwola"]["auc"] == {"median": 0.7, "q16": 0.7, "q84": 0.7, "n": 1}
    assert quantile_summary([math.nan])["n"] == 0
    inf = quantile_summary([1.0, 2.0, math.inf, math.inf])
    assert inf["q16"] == pytest.approx(np.quantile([1.0, 2.0], 0.48)) and inf["q84"] == math.inf

    s["cathode"]["max_sic_of_median"] = (13.99, 0.2, 2e-4)   # as max_sic_of_median returns
    s["cathode"]["runs"] = [0, 1, 2]                          # metadata: not a table row
    s["iad"]["max_sic_of_median"] = 15.08
    lines = format_table(s).splitlines()
    assert lines[0].split() == ["method", "metric", "median", "q16", "q84", "n"]
    assert set(lines[1]) == {"-"}
    assert len(lines) == 2 + 3 + 2 + 1 and not any("runs" in ln for ln in lines)
    assert lines[2].split() == ["cathode", "auc", f"{np.median(auc_c):.4g}",
                                f"{np.quantile(auc_c, 0.16):.4g}",
                                f"{np.quantile(auc_c, 0.84):.4g}", "10"]
    assert lines[3].split()[0] == "max_sic" and lines[3].split()[-1] == "9"
    assert lines[4].split() == ["max_sic_of_median", "13.99"]
    assert lines[6].split() == ["max_sic_of_median", "15.08"]
    only = format_table(s, ["max_sic_of_median", "auc"]).splitlines()
    assert [ln.split()[1 if ln[0] != " " else 0] for ln in only[2:]] == [
        "max_sic_of_median", "auc", "max_sic_of_median", "auc", "auc"]


def test_max_sic_of_median() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(50000), np.ones(50000)]
    pairs = [(y, np.r_[rng.standard_normal(50000), 2.0 + rng.standard_normal(50000)])
             for _ in range(5)]
    sic, tpr, fpr = max_sic_of_median(pairs, fpr_floor=1e-3, min_runs=5)
    # Gaussians 2 sigma apart: the cut x > c has SIC(c) = Phi(2 - c) / sqrt(Phi(-c)); it
    # rises with c, so the max is at the floor, Phi(-c) = 1e-3 (~50 background events per
    # run there: ~4 % noise per run, less for the median of 5)
    phi = [0.5 * math.erfc(c / math.sqrt(2)) for c in np.linspace(0, 5, 5001)]
    exact = max(0.5 * math.erfc((c - 2) / math.sqrt(2)) / math.sqrt(f)
                for c, f in zip(np.linspace(0, 5, 5001), phi) if f >= 1e-3)
    assert sic == pytest.approx(exact, rel=0.05)
    per_run = [max_sic(*p, fpr_floor=1e-3)[0] for p in pairs]
    assert min(per_run) * 0.97 <= sic <= max(per_run) * 1.01
    assert fpr >= 1e-3 * 0.999 and sic == pytest.approx(tpr / math.sqrt(fpr))
    # the same from (fpr, tpr) pairs
    rocs = [roc_curve(*p)[:2] for p in pairs]
    assert max_sic_of_median(rocs, fpr_floor=1e-3, min_runs=5)[0] == pytest.approx(sic)
    # a floor no run reaches: nan
    assert math.isnan(max_sic_of_median(pairs, fpr_floor=2.0)[0])
