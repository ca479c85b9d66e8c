"""Gaia stream search: ANODE vs CATHODE (and the Hough line search) as the stream weakens.

For each number of stream stars, a synthetic patch is written (same field stars, same seed)
and both methods run through the CLI (``train`` then ``evaluate``); the top-k purity/recall
and the line search's best window are collected into
``benchmarks/results/gaia_streams_<tag>.json``.

    python benchmarks/gaia_streams.py --tag tiny --n-field 30000 --n-stream 300 150 90 \\
        --config tiny

``--config tiny`` uses gaia_{anode,cathode}_tiny (3 windows around the stream, small flows:
minutes per run on one core); ``--config full`` the realistic gaia_{anode,cathode} (21
windows, GPU-sized). ``--set KEY=VALUE ...`` passes overrides to every ``train``, e.g. the
7-window CPU scan of the 400k-star patch (15-25 min per run on one loaded core):

    python benchmarks/gaia_streams.py --tag p400k_seed1 --n-field 400000 --seed 1 \\
        --n-stream 300 --methods cathode anode --config full \\
        --set anode.scan.start=-15.5 anode.scan.stop=-9.5

The results file is rewritten after every run; a run directory that already holds an
``evaluate`` summary is collected, not retrained (``--redo`` retrains).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from flowctl.atomic import write_text

REPO = Path(__file__).resolve().parents[1]
METHODS = ("anode", "cathode")


def sh(args: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(args)}\n")
        fh.flush()
        res = subprocess.run([sys.executable, *args], cwd=REPO, stdout=fh,
                             stderr=subprocess.STDOUT, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {res.returncode}); see {log}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="tiny")
    ap.add_argument("--n-field", type=int, default=30000)
    ap.add_argument("--n-stream", type=int, nargs="+", default=[300, 150, 90])
    ap.add_argument("--config", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/gaia-streams")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every train (e.g. anode.scan.start=-15.5)")
    ap.add_argument("--redo", action="store_true", help="retrain runs that already finished")
    ap.add_argument("--collect-only", action="store_true",
                    help="train nothing: collect the finished runs, skip the others")
    a = ap.parse_args(argv)
    root = Path(a.out) / a.tag
    root.mkdir(parents=True, exist_ok=True)
    log = root / "log.txt"
    suffix = "_tiny" if a.config == "tiny" else ""
    rows: list[dict] = []
    out = Path(a.results) / f"gaia_streams_{a.tag}.json"
    command = "python benchmarks/gaia_streams.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    for n in a.n_stream:
        data = root / "data" / f"patch_s{n}.h5"
        if not data.exists() and not a.collect_only:
            sh(["-m", "flowctl.data.synth.gaia", "--out", str(data.parent), "--name", data.stem,
                "--n-field", str(a.n_field), "--n-stream", str(n), "--seed", str(a.seed)], log)
        for m in a.methods:
            rd = root / f"{m}_s{n}"
            metrics = rd / "metrics.json"
            done = metrics.exists() and "evaluate" in json.loads(metrics.read_text())
            if a.collect_only and not done:
                print(f"stream {n:>5} {m:<8} not finished: skipped", flush=True)
                continue
            if done and not a.redo:
                prev = json.loads(metrics.read_text())
                t_train = prev.get("train", {}).get("train_wall_s", float("nan"))
                t_eval = prev["evaluate"].get("eval_wall_s", float("nan"))
            else:
                t_train = sh(["-m", "flowctl", "train", f"config=gaia_{m}{suffix}",
                              f"data.path={data}", f"run_dir={rd}", f"seed={a.seed}", *a.set],
                             log)
                t_eval = sh(["-m", "flowctl", "evaluate", f"run={rd}"], log)
            wall = t_train + t_eval
            ev = json.loads(metrics.read_text())["evaluate"]
            best = ev.get("hough", {}).get("best") or {}
            row = {"n_stream": n, "method": m, "wall_s": round(wall, 1),
                   "train_wall_s": round(t_train, 1), "eval_wall_s": round(t_eval, 1),
                   "run_dir": str(rd),
                   "n_stream_fiducial": ev.get("n_stream_fiducial"),
                   "random_purity": ev.get("random_purity"),
                   **{k: ev.get(k) for k in ("purity_top50", "purity_top100", "recall_top50",
                                             "recall_top100")},
                   "line": {k: best.get(k) for k in ("window", "count", "z", "p", "purity",
                                                     "recall")}}
            rows.append(row)
            print(f"stream {n:>5} {m:<8} top-100 purity {row['purity_top100']:.1%} "
                  f"(random {row['random_purity']:.1%}); line: {best.get('count')} stars, "
                  f"z {best.get('z', float('nan')):.1f}, purity {best.get('purity', 0):.1%}, "
                  f"recall {best.get('recall', 0):.1%} ({wall:.0f} s)", flush=True)
            write_text(out, json.dumps({
                "tag": a.tag, "config": a.config, "n_field": a.n_field,
                "n_stream": a.n_stream, "seed": a.seed, "overrides": a.set,
                "command": command, "runs": rows}, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
