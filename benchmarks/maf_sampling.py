"""W1c: sampling the 504-dimensional MAF-RQS (CaloFlow teacher size) and the IAF density.

MAF sampling and IAF density invert a MADE-conditioned transform. flowctl's ``incremental``
inverse computes each hidden unit once, in degree order; the ``naive`` inverse and the peers
(zuko, nflows) run D = 504 complete MADE passes per transform. Architecture (BENCH.md W1):
8 autoregressive transforms, MADE [504, 504], RQ splines with 8 bins on [-3, 3], float32.

Measured in one interleaved run (every contender once per repetition, rotating order):

1. full flow, batch ``--batch`` (10 000): flowctl incremental sampling, one forward pass
   (log_prob) of the same flow (the "within 20x of one forward pass" ratio), and sampling the
   IAF of the same size (CaloFlow's student: teacher/student ratio at the same hidden size);
2. the D-pass contenders are ~1 s per sample: they run ``--slow-batch`` (10) samples on a flow
   of ``--slow-transforms`` transforms (CPU default 1: the cost is linear in the number of
   transforms; per-sample figures are scaled to 8 transforms and marked so), against flowctl
   incremental at the same small batch;
3. IAF (the same layers used the other way round): log_prob incremental at ``--iaf-batch`` on
   the full flow vs naive at the small batch.

Reported: per-sample times and ratios; JSON in ``benchmarks/results/maf_sampling-<stamp>.json``.

Usage::

    python benchmarks/maf_sampling.py [--quick] [--device cpu|cuda] [--batch 10000]

On CPU the script sets ``OMP_WAIT_POLICY=PASSIVE`` unless already set: with the default active
wait, a loaded 2-core machine makes every small op (all contenders run thousands) cost ~20 ms.
On CUDA it also measures the incremental inverse captured in CUDA graphs (``cuda_graph=True``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/maf_sampling.py` from a checkout
    sys.path.insert(0, str(REPO))

import argparse
import gc
import json
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from importlib.metadata import version as package_version
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import (
    check_parameter_counts,
    count_parameters,
    format_seconds,
    format_table,
    interleaved_times,
    machine_info,
    median,
    synchronizer,
)
from flowctl.flows import Flow, build
from flowctl.flows.autoregressive import MaskedAutoregressive

D, TRANSFORMS, HIDDEN, BINS, BOUND = 504, 8, 504, 8, 3.0
SEED = 1234
RESULTS = REPO / "benchmarks" / "results"


def save(payload: dict[str, Any]) -> Path:
    """Write ``results/maf_sampling-<stamp>.json`` atomically; return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"maf_sampling-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


def set_loop(flow: nn.Module, loop: str, cuda_graph: bool = False) -> None:
    """Set ``exact_loop`` (and ``cuda_graph``) on every autoregressive layer of ``flow``."""
    for m in flow.modules():
        if isinstance(m, MaskedAutoregressive):
            m.exact_loop = loop
            m.cuda_graph = cuda_graph


def flowctl_flow(kind: str, transforms: int, device: torch.device) -> Flow:
    torch.manual_seed(SEED)
    flow = build({"kind": kind, "features": D, "transforms": transforms,
                  "hidden": [HIDDEN, HIDDEN], "transform": "rqs", "bins": BINS,
                  "tail_bound": BOUND, "permutation": "reverse"})
    with torch.no_grad():  # a trained-looking flow: perturb the zeroed output layers
        for m in flow.modules():
            if isinstance(m, MaskedAutoregressive):
                m.made.output_layer.weight.normal_(0.0, 0.01)
    return flow.to(device).eval()


def peer_flows(transforms: int, device: torch.device) -> dict[str, Callable[[int], Tensor]]:
    """zuko and nflows MAF-RQS of the same size; returns ``name -> sample(n)``."""
    from nflows.distributions import StandardNormal as NflowsNormal
    from nflows.flows import Flow as NflowsFlow
    from nflows.transforms import (
        CompositeTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        ReversePermutation,
    )
    from zuko.flows import MAF
    from zuko.transforms import MonotonicRQSTransform

    torch.manual_seed(SEED)
    # zuko's NSF is this MAF with bound 5; bound 3 to match (23 spline parameters per dim)
    zk = MAF(D, transforms=transforms, hidden_features=[HIDDEN, HIDDEN],
             univariate=partial(MonotonicRQSTransform, bound=BOUND, slope=1e-3),
             shapes=[(BINS,), (BINS,), (BINS - 1,)]).to(device).eval()
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for i in range(transforms):
        if i > 0:
            layers.append(ReversePermutation(D))
        layers.append(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            D, HIDDEN, num_bins=BINS, tails="linear", tail_bound=BOUND, num_blocks=1,
            use_residual_blocks=False))
    nf = NflowsFlow(CompositeTransform(layers), NflowsNormal([D])).to(device).eval()
    return {"zuko": (zk, lambda n: zk().sample((n,))), "nflows": (nf, nf.sample)}


def no_grad(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn()
    return run


def timed(fns: dict[str, Callable[[], Any]], warmup: int, reps: int,
          sync: Callable[[], None]) -> dict[str, float]:
    gc.collect()
    times = interleaved_times(fns, warmup, reps, sync)
    return {k: median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="incremental sampling batch")
    ap.add_argument("--iaf-batch", type=int, default=None, help="incremental IAF batch")
    ap.add_argument("--slow-batch", type=int, default=10, help="batch of the D-pass contenders")
    ap.add_argument("--slow-transforms", type=int, default=None,
                    help="transforms of the flows timed with D passes (CPU 1, CUDA 8)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    ap.add_argument("--big-reps", type=int, default=None,
                    help="repetitions at --batch (default: 1 on CPU, where one takes minutes)")
    ap.add_argument("--quick", action="store_true", help="small batches, one repetition")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    batch = args.batch or (1000 if args.quick else 10_000)
    iaf_batch = args.iaf_batch or (256 if args.quick else 1024)
    slow_t = args.slow_transforms or (TRANSFORMS if cuda else 1)
    reps = args.reps or (1 if args.quick else 3)
    big_reps = args.big_reps or (reps if cuda else 1)
    sb = args.slow_batch
    sync = synchronizer(device)
    scale = TRANSFORMS / slow_t
    rows: list[list[str]] = []
    result: dict[str, Any] = {
        "workload": "W1c MAF-RQS sampling + IAF density, D=504, 8 transforms, MADE [504, 504], "
                    "8 bins, bound 3, float32",
        "machine": machine_info(device, {"zuko": package_version("zuko"),
                                         "nflows": package_version("nflows")}),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "settings": {"batch": batch, "iaf_batch": iaf_batch, "slow_batch": sb,
                     "slow_transforms": slow_t, "reps": reps,
                     "big_reps": big_reps},
    }
    print(f"W1c on {device}: D={D}, {TRANSFORMS} transforms, MADE [{HIDDEN}, {HIDDEN}], "
          f"{BINS} bins, bound {BOUND}, float32, threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)

    # parameter counts of the full-size flows
    maf = flowctl_flow("maf", TRANSFORMS, device)
    peers_full = peer_flows(TRANSFORMS, device)
    counts = {"flowctl": count_parameters(maf),
              **{k: count_parameters(m) for k, (m, _) in peers_full.items()}}
    print("  parameters (8 transforms): " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    check_parameter_counts("W1c", counts)
    result["parameters"] = counts
    if slow_t == TRANSFORMS:
        slow_maf, peers = maf, peers_full
    else:
        del peers_full
        slow_maf, peers = flowctl_flow("maf", slow_t, device), peer_flows(slow_t, device)

    # 1. full flow at the big batch: incremental sampling vs one forward pass
    with torch.no_grad():  # data for the forward pass: samples of the flow itself
        x_eval = maf.sample(batch)
    iaf = flowctl_flow("iaf", TRANSFORMS, device)  # the student: same layers, other way round
    fns = {"incremental": no_grad(partial(maf.sample, batch)),
           "forward": no_grad(partial(maf.log_prob, x_eval)),
           "IAF sample": no_grad(partial(iaf.sample, batch))}
    if cuda:
        graphed = flowctl_flow("maf", TRANSFORMS, device)
        set_loop(graphed, "incremental", cuda_graph=True)
        fns["incremental+graph"] = no_grad(partial(graphed.sample, batch))
    print(f"  [1] full flow, batch {batch}: {', '.join(fns)} (warm-up, {big_reps} reps)",
          flush=True)
    wb = batch if cuda else 64  # a graph is captured per batch shape
    warm = {"incremental": no_grad(partial(maf.sample, wb)),
            "forward": no_grad(partial(maf.log_prob, x_eval[:wb])),
            "IAF sample": no_grad(partial(iaf.sample, wb))}
    if cuda:
        warm["incremental+graph"] = no_grad(partial(graphed.sample, wb))
    timed(warm, 0, 1, sync)
    t_big = timed(fns, 0, big_reps, sync)
    result["full_flow"] = {"batch": batch, "median_s": t_big}
    fwd = t_big["forward"]
    for k, v in t_big.items():
        rows.append([k if k.startswith("IAF") else f"MAF {k}", f"{batch}", format_seconds(v),
                     f"{v / batch * 1e3:.3f}",
                     f"{v / fwd:.2f}x forward"])
    if cuda:  # the graph replays the same computation
        with torch.no_grad():
            torch.manual_seed(1)
            a = graphed.sample(64)
            torch.manual_seed(1)
            set_loop(graphed, "incremental", cuda_graph=False)
            b = graphed.sample(64)
        result["graph_max_abs_diff"] = float((a - b).abs().max())
        print(f"      graph vs eager max |dx| {result['graph_max_abs_diff']:.2e}")

    # 2. D-pass contenders at the small batch (and incremental at the same batch)
    naive = flowctl_flow("maf", slow_t, device)
    set_loop(naive, "naive")
    fns = {"incremental": no_grad(partial(slow_maf.sample, sb)),
           "naive": no_grad(partial(naive.sample, sb)),
           **{k: no_grad(partial(s, sb)) for k, (_, s) in peers.items()}}
    print(f"  [2] {slow_t} transform(s), batch {sb}: {', '.join(fns)} "
          f"(1 warm-up at batch 2, {reps} reps)", flush=True)
    warm = {"naive": no_grad(partial(naive.sample, 2)),
            **{k: no_grad(partial(s, 2)) for k, (_, s) in peers.items()}}
    timed(warm, 0, 1, sync)
    t_small = timed(fns, 1 if cuda else 0, reps, sync)
    per_sample_small = {k: v / sb * scale for k, v in t_small.items()}
    result["small_batch"] = {"batch": sb, "transforms": slow_t, "median_s": t_small,
                             "per_sample_s_8_transforms": per_sample_small}
    per_big = t_big["incremental"] / batch
    mark = "" if slow_t == TRANSFORMS else f" (x{scale:g})"
    for k, v in per_sample_small.items():
        rows.append([f"MAF {k} ({slow_t} tr.)", f"{sb}", format_seconds(t_small[k]),
                     f"{v * 1e3:.3f}{mark}",
                     (f"{v / per_sample_small['incremental']:.1f}x incr@{sb}; "
                      f"{v / per_big:.0f}x incr@{batch}")])

    # 3. IAF density
    iaf_slow = flowctl_flow("iaf", slow_t, device)
    iaf_naive = flowctl_flow("iaf", slow_t, device)
    set_loop(iaf_naive, "naive")
    x_iaf = torch.randn(iaf_batch, D, device=device)
    x_sb = x_iaf[:sb]
    fns = {"incremental": no_grad(partial(iaf.log_prob, x_iaf)),
           "sample (one pass)": no_grad(partial(iaf.sample, iaf_batch)),
           f"incremental@{sb}": no_grad(partial(iaf_slow.log_prob, x_sb)),
           f"naive@{sb}": no_grad(partial(iaf_naive.log_prob, x_sb))}
    print(f"  [3] IAF log_prob: incremental at {iaf_batch} (8 tr.), incremental and naive at "
          f"{sb} ({slow_t} tr.)", flush=True)
    timed({f"naive@{sb}": no_grad(partial(iaf_naive.log_prob, x_iaf[:2]))}, 0, 1, sync)
    t_iaf = timed(fns, 1 if cuda else 0, reps, sync)
    per_iaf = {"incremental": t_iaf["incremental"] / iaf_batch,
               "sample (one pass)": t_iaf["sample (one pass)"] / iaf_batch,
               f"incremental@{sb}": t_iaf[f"incremental@{sb}"] / sb * scale,
               f"naive@{sb}": t_iaf[f"naive@{sb}"] / sb * scale}
    result["iaf"] = {"batch": iaf_batch, "median_s": t_iaf, "per_sample_s_8_transforms": per_iaf}
    for k, v in per_iaf.items():
        b = iaf_batch if "@" not in k else sb
        m = mark if "@" in k else ""
        rows.append([f"IAF log_prob {k}", f"{b}", format_seconds(t_iaf[k]),
                     f"{v * 1e3:.3f}{m}", f"{v / per_iaf['incremental']:.1f}x incr@{iaf_batch}"])

    print()
    print(format_table(["contender", "batch", "median time", "ms / sample (8 tr.)", "ratio"],
                       rows))
    per_student = t_big["IAF sample"] / batch
    summary = {
        "sampling_per_sample_ms": {"incremental@batch": per_big * 1e3,
                                   **{f"{k}@{sb}": v * 1e3 for k, v in per_sample_small.items()}},
        "incremental_vs_forward": t_big["incremental"] / fwd,
        "speedup_vs_naive@small_batch": per_sample_small["naive"]
        / per_sample_small["incremental"],
        "speedup_vs_naive@small_vs_incremental@batch": per_sample_small["naive"] / per_big,
        **{f"speedup_vs_{k}@batch": per_sample_small[k] / per_big for k in peers},
        "iaf_speedup_vs_naive@small_batch": per_iaf[f"naive@{sb}"] / per_iaf[f"incremental@{sb}"],
        "iaf_speedup_vs_naive@small_vs_incremental@batch": per_iaf[f"naive@{sb}"]
        / per_iaf["incremental"],
        # CaloFlow's teacher/student sampling ratio at the same size (ref. figure ~300x for a
        # D-pass teacher): against flowctl's incremental teacher, the naive and the peers' MAF
        "student_ms_per_sample@batch": per_student * 1e3,
        "teacher_incremental_vs_student@batch": per_big / per_student,
        **{f"teacher_{k}@{sb}_vs_student@batch": per_sample_small[k] / per_student
           for k in ("naive", *peers)},
    }
    if "incremental+graph" in t_big:
        summary["graph_speedup"] = t_big["incremental"] / t_big["incremental+graph"]
    result["summary"] = summary
    print()
    for k, v in summary.items():
        print(f"  {k}: " + (", ".join(f"{a} {b:.3f}" for a, b in v.items())
                            if isinstance(v, dict) else f"{v:.2f}"))
    if not args.no_save:
        print(f"saved {save(result)}")
    return result


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
