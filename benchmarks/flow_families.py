"""NAF, CNF (flow matching and NLL) and the D8-symmetric flow against the RQ-spline coupling
baseline on the 2-D toys, through the CLI (train, then evaluate: test NLL and KL(p||q)).

Every run is the quickstart (configs/quickstart.yaml: 50k training points, batch 512, AdamW,
cosine schedule) with the flow group swapped and the widths set so the parameter counts are
close (~23k); ``--epochs`` sets the training length of all but the NLL-trained CNF
(``--nll-epochs``, it solves an ODE with backprop per step). ``--data saddle`` trains the
M-flow on points of the surface z = (x² - y²)/2 in R^3 and reports the on-manifold KL
(against the exact density on the surface) and the reconstruction error. Writes
``benchmarks/results/flow_families-<date>.json`` and a log next to it.

    OMP_NUM_THREADS=1 python benchmarks/flow_families.py --epochs 10 --nll-epochs 2
    OMP_NUM_THREADS=1 python benchmarks/flow_families.py --add-invariance RESULTS.json

The second adds, for every ring run, the largest |log q(g x) - log q(x)| over the 16 elements
of D8 at 2000 test points (the ring toy is D8-symmetric; the symmetrised flow is exact).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from cli_log import flowctl

# name -> (flow group, extra overrides); widths chosen for ~23k parameters each
MODELS: dict[str, tuple[str, list[str]]] = {
    "coupling_rqs": ("coupling_rqs", ["flow.hidden=[64,64]"]),
    "maf_naf": ("maf_naf", ["flow.hidden=[56,56]", "flow.sigmoids=8"]),
    "coupling_naf": ("coupling_naf", ["flow.hidden=[64,64]", "flow.sigmoids=8"]),
    "cnf_fm": ("cnf", ["flow.hidden=[104,104,104]", "trainer.loss=flow_matching"]),
    "cnf_fm_ot": ("cnf", ["flow.hidden=[104,104,104]", "trainer.loss=flow_matching_ot"]),
    "cnf_nll": ("cnf", ["flow.hidden=[104,104,104]", "trainer.loss=nll"]),
    "coupling_rqs_d8": ("coupling_rqs_dihedral8", ["flow.hidden=[64,64]"]),
    "mflow": ("mflow", ["flow.hidden=[64,64]", "flow.tail_bound=6.0", "flow.transforms=6"]),
}
FULL_DIM = [m for m in MODELS if m not in ("coupling_rqs_d8", "mflow")]
DATA = {"ring": FULL_DIM + ["coupling_rqs_d8"], "checkerboard": FULL_DIM, "saddle": ["mflow"]}


def saddle(n: int, seed: int) -> np.ndarray:
    """Points on the surface z = (x² - y²)/2 in R^3 with (x, y) ~ N(0, I)."""
    xy = np.random.default_rng(seed).normal(size=(n, 2))
    return np.c_[xy, 0.5 * (xy[:, 0] ** 2 - xy[:, 1] ** 2)]


def saddle_log_prob(x: np.ndarray) -> np.ndarray:
    """Density on the surface w.r.t. its area: N(x, y) / sqrt(1 + |∇z|²)."""
    r2 = x[:, 0] ** 2 + x[:, 1] ** 2
    return -0.5 * r2 - np.log(2 * np.pi) - 0.5 * np.log1p(r2)


def saddle_kl(run: Path, n: int = 20000) -> dict:
    """On-manifold KL(p||q) at fresh surface points (q at their projections) and the
    reconstruction error of those points."""
    import torch

    from flowctl.apps.common import read_config
    from flowctl.apps.density import load_flow

    flow = load_flow(read_config(run), run)
    x = saddle(n, 12345)
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        lq = flow.log_prob(xt).double().numpy()
        rec = (xt - flow.project(xt)).pow(2).sum(1).double().numpy()
    d = saddle_log_prob(x) - lq
    return {"kl": float(d.mean()), "kl_se": float(d.std(ddof=1) / np.sqrt(n)),
            "reconstruction_mse": float(rec.mean()), "n_kl": n}


def write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def d8_invariance(run: Path, n: int = 2000) -> float:
    """max over the 16 elements g of D8 and n ring test points of |log q(g x) - log q(x)|."""
    import torch

    from flowctl.apps.common import read_config
    from flowctl.apps.density import load_data, load_flow
    from flowctl.flows.symmetry import dihedral_matrices

    cfg = read_config(run)
    flow = load_flow(cfg, run)
    x = torch.as_tensor(load_data(cfg["data"]).test[:n], dtype=torch.float64)
    flow = flow.double()
    with torch.no_grad():
        lp = flow.log_prob(x)
        worst = max((flow.log_prob(x @ g.T) - lp).abs().max().item()
                    for g in dihedral_matrices(8))
    return worst


def add_invariance(path: Path) -> None:
    """Add ``d8_invariance_max`` to the ring rows of a results file (rewritten in place)."""
    res = json.loads(path.read_text())
    runs_dir = Path(res.get("runs_dir", REPO / "outputs" / "flow_families"))
    for row in res["runs"]:
        if row["data"] == "ring":
            row["d8_invariance_max"] = d8_invariance(runs_dir / f"ring-{row['model']}")
            print(row["model"], row["d8_invariance_max"], flush=True)
    res["invariance_command"] = ("OMP_NUM_THREADS=1 python benchmarks/flow_families.py "
                                 f"--add-invariance {path.relative_to(REPO)}")
    write_json(path, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--nll-epochs", type=int, default=2)
    ap.add_argument("--data", nargs="*", default=list(DATA))
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--runs", default=str(REPO / "outputs" / "flow_families"))
    ap.add_argument("--add-invariance", default=None, metavar="RESULTS_JSON",
                    help="only add the D8 invariance error of the ring runs to a results file")
    a = ap.parse_args()
    if a.add_invariance:
        add_invariance(Path(a.add_invariance).resolve())
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = Path(a.out or REPO / "benchmarks" / "results" / f"flow_families-{stamp}.json")
    log = out.with_suffix(".log")
    result = {"command": "OMP_NUM_THREADS=1 python benchmarks/flow_families.py "
                         + " ".join(sys.argv[1:]),
              "date_utc": stamp, "machine": platform.processor() or platform.machine(),
              "threads": os.environ.get("OMP_NUM_THREADS"), "epochs": a.epochs,
              "nll_epochs": a.nll_epochs, "runs_dir": str(a.runs), "runs": []}
    for data in a.data:
        for name in DATA[data]:
            if name not in a.models:
                continue
            group, extra = MODELS[name]
            epochs = a.nll_epochs if name == "cnf_nll" else a.epochs
            run = Path(a.runs) / f"{data}-{name}"
            data_args = [f"data={data}"]
            if data == "saddle":
                path = Path(a.runs) / "saddle.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, saddle(50000, 0).astype("float32"))
                data_args = ["data=table", f"data.path={path}"]
            flowctl(["train", "config=quickstart", *data_args, f"flow={group}",
                     f"run_dir={run}", f"trainer.epochs={epochs}", *extra], log)
            flowctl(["evaluate", f"run={run}", "eval.plots=false"], log)
            m = json.loads((run / "metrics.json").read_text())
            tr, ev = m["train"], m["evaluate"]
            if data == "saddle":
                ev = {**ev, **saddle_kl(run)}
            row = {"data": data, "model": name, "flow": group, "overrides": extra,
                   "epochs": epochs, "parameters": tr["parameters"],
                   "loss": tr.get("loss", "nll"), "train_wall_s": tr["train_wall_s"],
                   "best_val_nll": tr["best_val_nll"], "test_nll": ev["test_nll"],
                   "test_nll_se": ev["test_nll_se"], "kl": ev.get("kl"),
                   "kl_se": ev.get("kl_se"), "test_nll_truth": ev.get("test_nll_truth"),
                   "reconstruction_mse": ev.get("reconstruction_mse")}
            result["runs"].append(row)
            write_json(out, result)
            print(json.dumps(row), flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
