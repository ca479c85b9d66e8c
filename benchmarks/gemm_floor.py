"""How far down a train-step ratio can go: the matrix products every library must run.

For the train-step rows of ``benchmarks/flows.py`` (W1a, W2a, W3a) this times every library's
step as that benchmark does (interleaved, medians), then profiles each step once more with
``torch.profiler`` and adds up the time spent in matrix products (``aten::mm``, ``addmm``,
``bmm``, ``baddbmm``) and their multiply-adds (from the operand shapes). The architectures are
the same across libraries (parameter counts within 5 %), so they run the same products.

``floor`` = flowctl's product time per step / the fastest peer's whole step: the ratio
flowctl would reach if everything but its matrix products took no time at all.
``mask floor`` = ``floor`` times the fraction of multiply-adds the MADE masks leave non-zero
(1 for dense conditioners): the ratio if in addition every masked-out weight were skipped at no
loss of product efficiency, which no BLAS call achieves. ``blocked floor`` = ``floor`` times the
best time ratio measured here for one masked MADE layer (``[B, 128] x [128, 128]`` with W3's
degrees, forward and both backward products) through flowctl's zero-skipping product with 2,
4 or 8 prefix blocks (``flowctl.flows.made``) against the dense product: what skipping with
BLAS calls buys, applied to every product (generous: the narrower layers gain less). A row
whose ``blocked floor`` is above a target cannot reach it by skipping masked blocks even if
everything but the products took no time.

Usage::

    python benchmarks/gemm_floor.py [--only W2,W3] [--reps 5] [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse
import gc
import time
import warnings
from functools import partial
from importlib.metadata import version as package_version
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import profile

from benchmarks.common import (
    format_table,
    interleaved_times,
    load_average,
    machine_info,
    median,
    results_path,
    save_results,
)
from benchmarks.flows import (
    SEED,
    coupling_rqs_models,
    maf_affine_models,
    maf_rqs_models,
    prepare,
    train_step,
)
from flowctl.allocator import tune_malloc
from flowctl.flows.made import (
    MaskedLinear,
    _BlockedMaskedLinear,
    hidden_degrees,
    prefix_blocks,
)

GEMM_OPS = {"aten::mm": 0, "aten::addmm": 1, "aten::bmm": 0, "aten::baddbmm": 1}
# (models, features, batch) per train-step row, as in benchmarks/flows.py
ROWS = {
    "W1": ("W1a", lambda: maf_rqs_models(504, 8, 504, 8, 3.0), 504, 256),
    "W2": ("W2a", lambda: coupling_rqs_models(8, 6, 128, 8, 3.0, nsf_hidden=96), 8, 4096),
    "W3": ("W3a", lambda: maf_affine_models(16, 5, 128), 16, 4096),
}


def product_flops(name: str, shapes: list[list[int]]) -> float:
    """Multiply-adds x 2 of one product from its operand shapes (bias operand first for the
    ``add`` variants)."""
    a, b = shapes[GEMM_OPS[name]], shapes[GEMM_OPS[name] + 1]
    if len(a) == 3:  # batched: [B, n, k] x [B, k, m]
        return 2.0 * a[0] * a[1] * a[2] * b[2]
    return 2.0 * a[0] * a[1] * b[1]


def profile_products(step: Any, steps: int) -> dict[str, float]:
    """Per step: seconds in matrix products, their FLOPs and count, and the profiled step."""
    with profile(record_shapes=True) as prof:
        for _ in range(steps):
            step()
    seconds = flops = calls = total = 0.0
    for event in prof.events():
        total += event.self_cpu_time_total
        if event.name in GEMM_OPS:
            seconds += event.self_cpu_time_total
            flops += product_flops(event.name, event.input_shapes)
            calls += 1
    return {"gemm_s": seconds * 1e-6 / steps, "gemm_flops": flops / steps,
            "gemm_calls": calls / steps, "profiled_step_s": total * 1e-6 / steps}


def mask_fraction(module: torch.nn.Module) -> float:
    """Non-zero fraction of the multiply-adds of a flow's masked layers weighted by size, with
    its unmasked layers counted as dense (1.0 for flows without MADEs)."""
    dense = kept = 0.0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            dense += m.weight.numel()
            kept += float(m.mask.sum()) if isinstance(m, MaskedLinear) else m.weight.numel()
    return kept / dense if dense else 1.0


def _timed(fn: Any, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def blocked_product_ratios(batch: int = 4096, width: int = 128, features: int = 16,
                           reps: int = 30) -> dict[str, float]:
    """Forward and backward of one masked ``width x width`` MADE layer through flowctl's
    zero-skipping product with ``k`` prefix blocks (``flowctl.flows.made``), over the same
    through the dense ``F.linear(x, weight * mask, bias)``, per ``k`` (medians)."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, width, generator=gen, requires_grad=True)
    up = torch.randn(batch, width, generator=gen)
    deg = hidden_degrees(width, features)
    layer = MaskedLinear(deg, deg, strict=False)

    def step(product: Any) -> None:
        torch.autograd.backward(product(), up)

    dense = _timed(partial(step, lambda: F.linear(x, layer.weight * layer.mask, layer.bias)),
                   reps)
    ratios = {}
    for k in (2, 4, 8):
        blocks = prefix_blocks(deg, deg, strict=False, blocks=k)
        product = partial(_BlockedMaskedLinear.apply, x, layer.weight, layer.mask, layer.bias,
                          blocks)
        ratios[str(k)] = _timed(partial(step, product), reps) / dense
    return ratios


def run_row(key: str, reps: int, warmup: int, profiled_steps: int,
            blocked_ratio: float) -> dict[str, Any]:
    rid, make, features, batch = ROWS[key]
    models = make()
    counts = prepare(models, key, torch.device("cpu"))
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(SEED + 7))
    steps = {name: train_step(m, x) for name, m in models.items()}
    times = interleaved_times(steps, warmup, reps)
    wall = {name: median(t) for name, t in times.items()}
    products = {name: profile_products(step, profiled_steps) for name, step in steps.items()}
    peers = {k: v for k, v in wall.items() if k != "flowctl"}
    fastest = min(peers, key=peers.get)
    ours = products["flowctl"]
    floor = ours["gemm_s"] / peers[fastest]
    fraction = mask_fraction(models["flowctl"].module)
    gc.collect()
    return {"id": rid, "batch": batch, "parameters": counts, "wall_median_s": wall,
            "times_s": times, "products": products, "fastest_peer": fastest,
            "ratio_to_fastest_peer": wall["flowctl"] / peers[fastest],
            "floor": floor, "mask_fraction": fraction, "mask_floor": floor * fraction,
            "blocked_floor": floor * min(1.0, blocked_ratio) if fraction < 1 else floor,
            "load_average": load_average()}


def report(rows: list[dict[str, Any]]) -> str:
    header = ["row", "flowctl step", "fastest peer", "ratio", "flowctl products",
              "share", "GFLOP/s", "floor", "blocked floor", "mask floor"]
    lines = []
    for r in rows:
        ours = r["products"]["flowctl"]
        step = r["wall_median_s"]["flowctl"]
        peer = r["fastest_peer"]
        lines.append([
            r["id"], f"{step * 1e3:.1f} ms", f"{peer} {r['wall_median_s'][peer] * 1e3:.1f} ms",
            f"{r['ratio_to_fastest_peer']:.2f}", f"{ours['gemm_s'] * 1e3:.1f} ms",
            f"{ours['gemm_s'] / ours['profiled_step_s']:.0%}",
            f"{ours['gemm_flops'] / ours['gemm_s'] / 1e9:.0f}",
            f"{r['floor']:.2f}", f"{r['blocked_floor']:.2f}", f"{r['mask_floor']:.2f}"])
    return format_table(header, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="W2,W3", help="subset of W1,W2,W3 (default W2,W3)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profiled-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--malloc", default="default", choices=["default", "tuned"])
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    if not only or set(only) - set(ROWS):
        raise SystemExit(f"--only: choose from {', '.join(ROWS)}, got {args.only!r}")
    warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")
    torch.set_num_threads(args.threads)
    if args.malloc == "tuned" and not tune_malloc():
        raise SystemExit("--malloc tuned: glibc's mallopt is not available here")
    info = machine_info(torch.device("cpu"), {name: package_version(name)
                                              for name in ("zuko", "nflows", "normflows")})
    start = time.perf_counter()
    blocked = blocked_product_ratios()
    print("masked 128 x 128 layer, batch 4096, forward + backward, k prefix blocks / dense: "
          + ", ".join(f"k={k} {v:.2f}" for k, v in blocked.items()), flush=True)
    rows = [run_row(key, args.reps, args.warmup, args.profiled_steps, min(blocked.values()))
            for key in only]
    print(report(rows))
    if not args.no_save:
        path = save_results(results_path("gemm_floor"), {
            "benchmark": "gemm_floor", "machine": info, "only": only, "malloc": args.malloc,
            "reps": args.reps, "warmup": args.warmup, "profiled_steps": args.profiled_steps,
            "blocked_product_ratios": blocked,
            "total_s": time.perf_counter() - start, "results": rows})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
