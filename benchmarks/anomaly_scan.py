"""Signal-injection scan: max SIC against S/B for CATHODE, ANODE and CWoLa on data alone.

For every injected signal count (``data.n_sig``) and seed, each method runs through the CLI in
data-only mode (no extra files: every SR event is scored out-of-fold, k = 5) and the R&D file's
labels give its max SIC. The seed also sets ``data.split_seed``, so each seed injects a
different signal subset (CATHODE's scan does the same). ANODE reuses the same point's CATHODE
sideband flow. One ``flowctl evaluate`` per point adds each method's sideband-sculpting numbers
(and plots/sculpting.png in that point's first run). Writes ``benchmarks/results/anomaly_scan_<tag>.json`` (per-run numbers and the
median/16-84 % table) and ``anomaly_scan_<tag>.png`` (the papers' sensitivity plot).

    python benchmarks/anomaly_scan.py --data data/lhco-scan/events_anomalydetection_v2.features.h5 \\
        --tag cpu --preset scan_cpu --n-sig 3000 1500 1000 600 300 --seeds 0 1 2 3 4 --jobs 2

Points already done (a ``scores`` entry in the run's metrics.json) are not rerun, so an
interrupted scan resumes. ``--preset scan_cpu`` is configs/preset/scan_cpu.yaml; ``--config
tiny`` uses the ``*_tiny`` configs instead of the full ones (minutes per point; a smoke test,
not the papers' settings).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flowctl.anomaly.scan import scan_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from cli_log import flowctl

METHODS = ("cathode", "anode", "cwola")
SCULPT_KEYS = ("sb_efficiency_at_fpr0.01", "sb_chi2_ndf_at_fpr0.01",
               "sb_efficiency_at_fpr0.001", "sb_chi2_ndf_at_fpr0.001")


def _done(rd: Path) -> dict[str, Any] | None:
    p = rd / "metrics.json"
    if not p.exists():
        return None
    m = json.loads(p.read_text())
    return m if "scores" in m else None


def run_point(n_sig: int, seed: int, a: argparse.Namespace, root: Path) -> list[dict]:
    """All methods at one (n_sig, seed); returns one record per method."""
    suffix = "_tiny" if a.config == "tiny" else ""
    common = [f"data.path={a.data}", "data.extra_bkg=null", "data.extra_sig=null",
              f"data.n_sig={n_sig}", f"data.split_seed={seed}", f"seed={seed}", *a.extra]
    if a.preset != "none":
        common.append(f"+preset={a.preset}")
    log = root / f"log_n{n_sig}_s{seed}.txt"
    rd = {m: root / m / f"n{n_sig}" / f"seed{seed}" for m in a.methods}
    walls: dict[str, float] = {}
    if "cathode" in a.methods or "anode" in a.methods:
        cat = root / "cathode" / f"n{n_sig}" / f"seed{seed}"
        if _done(cat) is None:
            w = flowctl(["train", f"config=cathode{suffix}", f"run_dir={cat}", *common], log)
            if "cathode" in a.methods:
                w += flowctl(["sample", f"run={cat}"], log)
                w += flowctl(["classify", f"run={cat}"], log)
            walls["cathode"] = w
    if "anode" in a.methods and _done(rd["anode"]) is None:
        walls["anode"] = flowctl(["train", f"config=anode{suffix}", f"run_dir={rd['anode']}",
                                  f"sideband_run={root / 'cathode' / f'n{n_sig}' / f'seed{seed}'}",
                                  *common], log)
    if "cwola" in a.methods and _done(rd["cwola"]) is None:
        walls["cwola"] = flowctl(["train", f"config=cwola{suffix}", f"run_dir={rd['cwola']}",
                                  *common], log)
    # one `evaluate` per point: the sculpting check (sideband efficiency flatness) of each
    # method and plots/{roc_sic,sculpting}.png in the first method's run
    first = rd[a.methods[0]]
    ev = json.loads((first / "metrics.json").read_text()).get("evaluate")
    if not ev or set(ev.get("methods", {})) != set(a.methods):
        # no background-template check here: 5 extra classifiers per point, and the template
        # does not depend on the injection (benchmarks/anomaly.py reports it)
        flowctl(["evaluate", f"run={first}", f"eval.search=[{root}]",
                 "eval.template_check=false"], log)
        ev = json.loads((first / "metrics.json").read_text())["evaluate"]
    out = []
    for m in a.methods:
        met = _done(rd[m])
        if met is None:
            raise RuntimeError(f"{rd[m]} has no scores after its run; see {log}")
        s, info = met["scores"], met["train"]["data"]
        wall = walls.get(m)
        if wall is None:
            wall = met.get("train", {}).get("wall_s", 0.0) + \
                met.get("classify", {}).get("wall_s", 0.0)
        out.append({"method": m, "n_sig": n_sig, "seed": seed, "run": str(rd[m]),
                    "max_sic": s.get("max_sic"), "auc": s.get("auc"),
                    "gain_at_fpr0.01": s.get("gain_at_fpr0.01"),
                    "gain_at_fpr0.001": s.get("gain_at_fpr0.001"),
                    "s_over_b": info["sr_s_over_b"], "s_over_sqrt_b": info["sr_s_over_sqrt_b"],
                    "sr_signal": info["sr_signal"], "sr_background": info["sr_background"],
                    **{k: (ev["methods"][m].get(k) or {}).get("median") for k in SCULPT_KEYS},
                    "wall_s": round(float(wall), 1)})
    print(f"n_sig {n_sig} seed {seed}: " + ", ".join(
        f"{r['method']} max SIC {r['max_sic']}" for r in out), flush=True)
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="one LHCO R&D-format features file")
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--n-sig", type=int, nargs="+", default=[3000, 1500, 1000, 600, 300])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--preset", default="scan_cpu", help="configs/preset/NAME.yaml, or none")
    ap.add_argument("--config", default="full", choices=("full", "tiny"),
                    help="full: cathode/anode/cwola.yaml; tiny: the *_tiny configs")
    ap.add_argument("--jobs", type=int, default=1, help="points run in parallel")
    ap.add_argument("--out", default="outputs/anomaly-scan")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--extra", nargs="*", default=[], help="more key=value overrides")
    a = ap.parse_args(argv)
    if not Path(a.data).is_file():
        raise SystemExit(f"{a.data}: no such file (make cathode-scan writes one)")
    root = Path(a.out) / a.tag
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    points = [(n, s) for s in a.seeds for n in a.n_sig]
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        done = list(pool.map(lambda p: run_point(p[0], p[1], a, root), points))
    records = [r for rs in done for r in rs]
    table = scan_table(records)
    res = _clean({"tag": a.tag, "data": str(a.data), "preset": a.preset, "config": a.config,
                  "extra": a.extra, "n_sig": a.n_sig, "seeds": a.seeds, "k": 5,
                  "wall_s_total": round(time.perf_counter() - t0, 1),
                  "command": "python benchmarks/anomaly_scan.py " + " ".join(
                      sys.argv[1:] if argv is None else argv),
                  "table": table, "runs": records})
    out = Path(a.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"anomaly_scan_{a.tag}.json").write_text(json.dumps(res, indent=1) + "\n")
    from flowctl.plots.anomaly import save, scan_figure

    fig = scan_figure({m: {"x": [r["s_over_b"]["median"] * 100 for r in rows],
                           **{k: [r["max_sic"][k] for r in rows]
                              for k in ("median", "q16", "q84")}}
                       for m, rows in table.items()},
                      x_label="S/B in the SR [%]", y_label="max SIC (median, 16-84 % band)")
    fig.suptitle(f"injection scan, data-only k-fold ({a.tag}: {len(a.seeds)} seed(s))",
                 fontsize="medium")
    save(fig, out / f"anomaly_scan_{a.tag}.png")
    print(f"{'method':<8} {'n_sig':>6} {'S/B %':>7} {'max SIC median [16, 84]':>28} "
          f"{'signif. after cut':>18}")
    for m, rows in table.items():
        for r in rows:
            ms, sg = r["max_sic"], r["significance_after_cut"]
            print(f"{m:<8} {r['n_sig']:>6} {100 * r['s_over_b']['median']:>7.3f} "
                  f"{ms['median']:>12.2f} [{ms['q16']:.2f}, {ms['q84']:.2f}] "
                  f"{sg['median']:>18.2f}")
    print(f"-> {out / f'anomaly_scan_{a.tag}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
