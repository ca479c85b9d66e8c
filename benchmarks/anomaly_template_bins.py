"""Where a CATHODE template is off, in physics bins: true SR background / samples per bin of
the heavier jet's mass and of each tau21, and what the background that passes CATHODE's
TPR-0.5 cut looks like.

Complements the template check of ``flowctl evaluate`` (one AUC per run) for issue 20.
Cheap: no training; reads each run's ``samples.h5`` and ``scores.npz`` and the data files.

    python benchmarks/anomaly_template_bins.py --data data/lhco/independent --tag independent \\
        outputs/anomaly-bench/independent/cathode/seed0 outputs/anomaly-bench/ind-rqs/cathode/seed0

writes ``benchmarks/results/anomaly_template_bins_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from flowctl.anomaly.splits import load_splits
from flowctl.data.lhco import load_lhco

REPO = Path(__file__).resolve().parents[1]
FILES = {"path": "events_anomalydetection_v2.features.h5",
         "extra_bkg": "events_anomalydetection_qcd_extra_inneronly_features.h5",
         "extra_sig": "events_anomalydetection_signal_extra.features.h5"}
MJ2_EDGES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.5]    # TeV
TAU_EDGES = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
NAMES = ("mjj", "mj1", "dmj", "tau21j1", "tau21j2")


def ratio_per_bin(truth: np.ndarray, samples: np.ndarray, edges: list[float]
                  ) -> list[dict[str, float]]:
    """Normalised truth / samples ``[bins]`` of one variable ``[N]`` in bins ``edges``,
    with truth counts and the statistical error."""
    ht, _ = np.histogram(truth, edges)
    hs, _ = np.histogram(samples, edges)
    out = []
    for i, (a, b) in enumerate(zip(ht, hs)):
        r = (a / len(truth)) / (b / len(samples)) if b else float("nan")
        err = r * np.sqrt(1 / max(a, 1) + 1 / max(b, 1))
        out.append({"lo": edges[i], "hi": edges[i + 1], "n_truth": int(a),
                    "truth_over_samples": round(float(r), 4), "stat_err": round(float(err), 4)})
    return out


def passing_background(test: np.ndarray, scores: np.ndarray, tpr: float = 0.5
                       ) -> dict[str, object]:
    """Background test events above the score cut of signal efficiency ``tpr``: how many, and
    their feature quantiles (10/50/90 %) beside the signal's."""
    b = test[:, 5] == 0
    thr = np.quantile(scores[~b], 1 - tpr)
    sel = b & (scores > thr)
    q = [0.1, 0.5, 0.9]
    return {"n_pass": int(sel.sum()), "n_background": int(b.sum()),
            "quantiles_pass": {n: np.round(np.quantile(test[sel, j], q), 4).tolist()
                               for j, n in enumerate(NAMES)},
            "quantiles_signal": {n: np.round(np.quantile(test[~b, j], q), 4).tolist()
                                 for j, n in enumerate(NAMES)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with the three files")
    ap.add_argument("--tag", required=True)
    ap.add_argument("runs", nargs="+", type=Path, help="CATHODE run directories (sampled, "
                    "classified) on that data, default data settings")
    a = ap.parse_args(argv)
    sp = load_splits({k: str(a.data / v) for k, v in FILES.items()}, need_test=True)
    truth = load_lhco(a.data / FILES["extra_bkg"])
    truth = truth[truth[:, 5] == 0]
    res: dict[str, object] = {"data": str(a.data), "command": " ".join(sys.argv), "runs": {}}
    for run in a.runs:        # runs without samples.h5 (idealized, CWoLa): the cut only
        z = np.load(run / "scores.npz")
        if not np.array_equal(z["labels"], sp.test[:, 5]):
            raise SystemExit(f"{run}: its test set is not the default split of {a.data}")
        rr: dict[str, object] = {"pass_tpr0.5": passing_background(sp.test, z["scores"])}
        flow = json.loads((run / "metrics.json").read_text()).get("train", {}).get(
            "sideband_flow")
        if flow:
            rr["sideband_best_val_nll"] = flow.get("best_val_nll")
        line = ""
        if (run / "samples.h5").exists():
            with h5py.File(run / "samples.h5", "r") as f:
                samples = f["samples"][()]
            rr["mj2_ratio"] = ratio_per_bin(truth[:, 1] + truth[:, 2],
                                            samples[:, 1] + samples[:, 2], MJ2_EDGES)
            for j, name in ((3, "tau21j1"), (4, "tau21j2")):
                rr[f"{name}_ratio"] = ratio_per_bin(truth[:, j], samples[:, j], TAU_EDGES)
            line = "; ".join(f"{k}: " + " ".join(f"{d['lo']:.1f}:{d['truth_over_samples']:.2f}"
                                                 for d in rr[k])
                             for k in ("mj2_ratio", "tau21j1_ratio", "tau21j2_ratio"))
        res["runs"][str(run)] = rr
        print(run, line, f"| background passing TPR 0.5: {rr['pass_tpr0.5']['n_pass']}")
    out = REPO / "benchmarks" / "results" / f"anomaly_template_bins_{a.tag}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
