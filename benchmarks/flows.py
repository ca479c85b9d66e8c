"""Side-by-side speed and quality of flowctl.flows against zuko, nflows and normflows
(``make bench``).

Workloads (../shared/BENCH.md), float32, fixed seeds, every library timed once per repetition
in a rotating order (so machine drift hits all alike), medians of the repetitions:

* W1  MAF-RQS on 504 dims (8 transforms, MADE [504, 504], 8 bins, bound 3):
      (a) train step at batch 256, (b) log_prob at batch 1024 without grad.
      (c) sampling is measured by ``benchmarks/maf_sampling.py``, not here.
* W2  RQS coupling on 8 dims (6 layers, MLP 2x128, 8 bins, bound 3): train step at batch 4096,
      log_prob and sampling at 65 536. zuko appears twice: as a true coupling flow
      (``GeneralCouplingTransform``, the column ``zuko``) and as ``NSF(passes=2)`` (the column
      ``zuko-nsf2``, hidden width 96 so its parameter count matches within 5 %).
* W3  affine MAF on 16 dims (5 transforms, MADE 2x128): train step at 4096, sampling 10 000.
normflows 1.7.3 runs its own layers as its users would: ``MaskedAffineAutoregressive`` (W3)
wrapped in its ``Reverse`` so that, like the MAFs of the other libraries, density is the one-pass
direction (normflows' own orientation makes it an IAF: 16 sequential MADE passes per log_prob);
``AutoregressiveRationalQuadraticSpline`` (W1) and ``CoupledRationalQuadraticSpline`` (W2, Q) as
they are. Their conditioners are residual networks (one residual block: input layer, two hidden
layers, output layer) and the coupling wrapper also transforms the conditioning half by a free
spline (nflows' ``apply_unconditional_transform``); the hidden width is chosen so the parameter
count matches flowctl's within 5 % (printed). Permutations: ``Permute(mode="swap")``.

* Q   the W2 architecture on 2 dims, 2000 Adam steps (lr 1e-3, batch 512) on a ring of
      8 Gaussians; KL(p||q) on 100k fresh samples with its Monte-Carlo error, and wall time.

Usage::

    python benchmarks/flows.py [--quick] [--only W1,W2,W3,Q] [--device cpu|cuda]
        [--malloc default|tuned]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/flows.py` from a checkout, not installed
    sys.path.insert(0, str(REPO))

import argparse
import gc
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
    load_average,
    machine_info,
    median,
    paired_ratios,
    results_path,
    save_results,
    synchronizer,
)
from flowctl.allocator import tune_malloc
from flowctl.flows import build

try:
    import normflows as nf
    from nflows.distributions import StandardNormal as NflowsNormal
    from nflows.flows import Flow as NflowsFlow
    from nflows.transforms import (
        CompositeTransform,
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        ReversePermutation,
    )
    from zuko.flows import MAF as ZukoMAF
    from zuko.flows import NICE as ZukoCoupling
    from zuko.transforms import MonotonicRQSTransform
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise SystemExit(f"the flow benchmark needs the peers: pip install -e '.[bench]' ({err})")

LIBRARIES = ("flowctl", "zuko", "nflows", "normflows")
ZUKO_NSF = "zuko-nsf2"  # zuko NSF with passes=2 (W2 only)
WORKLOADS = ("W1", "W2", "W3", "Q")
SEED = 1234
LR = 1e-3


# ----------------------------------------------------------------------------------------------
# A common face for the three libraries


@dataclass
class Model:
    """One library's flow: its module (for parameters and Adam) and two callables."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]


def flowctl_model(spec: dict[str, Any]) -> Model:
    flow = build(spec)
    return Model(flow, flow.log_prob, flow.sample)


def zuko_model(flow: nn.Module) -> Model:
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def nflows_model(transforms: list[nn.Module], features: int) -> Model:
    flow = NflowsFlow(CompositeTransform(transforms), NflowsNormal([features]))
    return Model(flow, flow.log_prob, flow.sample)


class TwoLayerNet(nn.Module):
    """nflows coupling conditioner: ``in -> hidden -> hidden -> out`` with ReLU (an MLP 2xH)."""

    def __init__(self, in_features: int, out_features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out_features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def zuko_rqs(bound: float) -> Callable[..., Any]:
    """zuko's spline with our tail bound (its NSF default is 5)."""
    return partial(MonotonicRQSTransform, bound=bound, slope=1e-3)


def normflows_model(layers: list[nn.Module], features: int) -> Model:
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(features, trainable=False), layers)
    return Model(flow, flow.log_prob, lambda n: flow.sample(n)[0])


def matched_width(make_layer: Callable[[int], nn.Module], target: int, start: int) -> int:
    """Smallest hidden width whose one-layer parameter count reaches ``target`` (bisection;
    the count grows with the width)."""
    lo, hi = 1, 4 * start
    while lo < hi:
        mid = (lo + hi) // 2
        if count_parameters(make_layer(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    below = count_parameters(make_layer(max(1, lo - 1)))
    return lo - 1 if lo > 1 and target - below < count_parameters(make_layer(lo)) - target else lo


def normflows_stack(make_layer: Callable[[int], nn.Module], transforms: int, target: int,
                    start: int, features: int, permute: bool) -> Model:
    """``transforms`` normflows layers of the width matching ``target`` parameters in all,
    optionally with ``Permute(mode="swap")`` between them."""
    width = matched_width(make_layer, target // transforms, start)
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for i in range(transforms):
        if permute and i > 0:
            layers.append(nf.flows.Permute(features, mode="swap"))
        layers.append(make_layer(width))
    print(f"  normflows hidden width {width} (parameter count matched)", flush=True)
    return normflows_model(layers, features)


def rqs_shapes(bins: int) -> list[tuple[int, ...]]:
    return [(bins,), (bins,), (bins - 1,)]


# ----------------------------------------------------------------------------------------------
# Model builders per workload


def maf_rqs_models(features: int, transforms: int, hidden: int, bins: int,
                   bound: float) -> dict[str, Model]:
    """W1: MAF with RQ splines, MADE with two hidden layers of width ``hidden``."""
    torch.manual_seed(SEED)
    ours = flowctl_model({"kind": "maf", "features": features, "transforms": transforms,
                          "hidden": [hidden, hidden], "transform": "rqs", "bins": bins,
                          "tail_bound": bound, "permutation": "reverse"})
    torch.manual_seed(SEED)
    zk = zuko_model(ZukoMAF(features, transforms=transforms, univariate=zuko_rqs(bound),
                            shapes=rqs_shapes(bins), hidden_features=[hidden, hidden]))
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for i in range(transforms):
        if i > 0:
            layers.append(ReversePermutation(features))
        layers.append(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            features, hidden, num_bins=bins, tails="linear", tail_bound=bound, num_blocks=1,
            use_residual_blocks=False))
    nfl = nflows_model(layers, features)
    target = count_parameters(ours.module)
    nfm = normflows_stack(
        lambda w: nf.flows.AutoregressiveRationalQuadraticSpline(
            features, 1, w, num_bins=bins, tail_bound=bound),
        transforms, target, hidden, features, permute=True)
    return {"flowctl": ours, "zuko": zk, "nflows": nfl, "normflows": nfm}


def coupling_rqs_models(features: int, transforms: int, hidden: int, bins: int, bound: float,
                        nsf_hidden: int | None = None) -> dict[str, Model]:
    """W2 / Q: RQS coupling flow, conditioner MLP 2 x ``hidden``, alternating halves.

    With ``nsf_hidden`` also zuko's ``NSF(passes=2)`` (a MADE whose first half of the outputs
    sees nothing: every layer also transforms the conditioning half by a free spline).
    """
    torch.manual_seed(SEED)
    ours = flowctl_model({"kind": "coupling", "features": features, "transforms": transforms,
                          "hidden": [hidden, hidden], "transform": "rqs", "bins": bins,
                          "tail_bound": bound, "permutation": "none"})
    torch.manual_seed(SEED)
    zk = zuko_model(ZukoCoupling(features, transforms=transforms, univariate=zuko_rqs(bound),
                                 shapes=rqs_shapes(bins), hidden_features=[hidden, hidden]))
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for i in range(transforms):
        mask = (torch.arange(features) % 2 == i % 2).int()  # 1 = transformed
        layers.append(PiecewiseRationalQuadraticCouplingTransform(
            mask, partial(TwoLayerNet, hidden=hidden), num_bins=bins, tails="linear",
            tail_bound=bound))
    nfl = nflows_model(layers, features)
    target = count_parameters(ours.module)
    width = matched_width(lambda w: nf.flows.CoupledRationalQuadraticSpline(
        features, 1, w, num_bins=bins, tail_bound=bound), target // transforms, hidden)
    torch.manual_seed(SEED)
    nfm = normflows_model([nf.flows.CoupledRationalQuadraticSpline(
        features, 1, width, num_bins=bins, tail_bound=bound, reverse_mask=i % 2 == 1)
        for i in range(transforms)], features)
    print(f"  normflows hidden width {width} (parameter count matched)", flush=True)
    models = {"flowctl": ours, "zuko": zk, "nflows": nfl, "normflows": nfm}
    if nsf_hidden is not None:
        torch.manual_seed(SEED)
        models[ZUKO_NSF] = zuko_model(ZukoMAF(
            features, transforms=transforms, passes=2, univariate=zuko_rqs(bound),
            shapes=rqs_shapes(bins), hidden_features=[nsf_hidden, nsf_hidden]))
    return models


def maf_affine_models(features: int, transforms: int, hidden: int) -> dict[str, Model]:
    """W3: affine MAF, MADE with two hidden layers of width ``hidden``, reversed orders."""
    torch.manual_seed(SEED)
    ours = flowctl_model({"kind": "maf", "features": features, "transforms": transforms,
                          "hidden": [hidden, hidden], "transform": "affine",
                          "permutation": "reverse"})
    torch.manual_seed(SEED)
    zk = zuko_model(ZukoMAF(features, transforms=transforms, hidden_features=[hidden, hidden]))
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for i in range(transforms):
        if i > 0:
            layers.append(ReversePermutation(features))
        layers.append(MaskedAffineAutoregressiveTransform(
            features, hidden, num_blocks=1, use_residual_blocks=False))
    nfl = nflows_model(layers, features)
    torch.manual_seed(SEED)
    nf_layers: list[nn.Module] = []
    for i in range(transforms):  # same MADE as nflows's; Reverse: density is the one pass
        if i > 0:
            nf_layers.append(nf.flows.Permute(features, mode="swap"))
        nf_layers.append(nf.flows.Reverse(nf.flows.MaskedAffineAutoregressive(
            features, hidden, num_blocks=1, use_residual_blocks=False)))
    nfm = normflows_model(nf_layers, features)
    return {"flowctl": ours, "zuko": zk, "nflows": nfl, "normflows": nfm}


# ----------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Settings:
    device: torch.device
    warmup: int
    reps: int
    quick: bool

    @property
    def sync(self) -> Callable[[], None]:
        return synchronizer(self.device)


def train_step(model: Model, x: Tensor) -> Callable[[], None]:
    """One step of ``-log_prob(x).mean()`` + backward + Adam on the model's parameters."""
    opt = torch.optim.Adam(model.module.parameters(), lr=LR)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = -model.log_prob(x).mean()
        loss.backward()
        opt.step()

    return step


def no_grad(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn()
    return run


def prepare(models: dict[str, Model], workload: str, device: torch.device) -> dict[str, int]:
    """Move to ``device``, count and check parameters, print the counts."""
    for m in models.values():
        m.module.to(device)
    counts = {name: count_parameters(m.module) for name, m in models.items()}
    print("  parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    check_parameter_counts(workload, counts)
    return counts


def measure(rows: list[dict[str, Any]], wid: str, label: str, counts: dict[str, int],
            fns: dict[str, Callable[[], Any]], st: Settings, **extra: Any) -> None:
    """Time ``fns`` interleaved, print the medians, append a result row."""
    gc.collect()
    cpu: dict[str, list[float]] = {}
    times = interleaved_times(fns, st.warmup, st.reps, st.sync, cpu_times=cpu)
    med = {name: median(t) for name, t in times.items()}
    ratios = {f"flowctl/{k}": med["flowctl"] / v for k, v in med.items() if k != "flowctl"}
    paired = paired_ratios(times)
    cpu_med = {name: median(t) for name, t in cpu.items()}
    cpu_ratios = {f"flowctl/{k}": cpu_med["flowctl"] / v
                  for k, v in cpu_med.items() if k != "flowctl" and v > 0}
    print(f"  {wid:<4} {label:<34} " + "  ".join(f"{k} {format_seconds(v)}"
                                                 for k, v in med.items())
          + "   " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items())
          + "   paired " + " ".join(f"{v:.2f}" for v in paired.values())
          + "   cpu-time " + " ".join(f"{v:.2f}" for v in cpu_ratios.values()), flush=True)
    rows.append({"id": wid, "workload": label, "parameters": counts, "median_s": med,
                 "min_s": {k: min(t) for k, t in times.items()}, "ratios": ratios,
                 "paired_ratios": paired, "times_s": times, "cpu_median_s": cpu_med,
                 "cpu_ratios": cpu_ratios, "cpu_s": cpu, "load_average": load_average(),
                 **extra})


def run_w1(rows: list[dict[str, Any]], st: Settings) -> None:
    d, t, h, bins, bound = 504, 8, 504, 8, 3.0
    print(f"W1: MAF-RQS D={d}, {t} transforms, MADE [{h}, {h}], {bins} bins, bound {bound}")
    models = maf_rqs_models(d, t, h, bins, bound)
    counts = prepare(models, "W1", st.device)
    gen = torch.Generator().manual_seed(SEED + 1)
    x_train = torch.randn(256, d, generator=gen).to(st.device)
    x_eval = torch.randn(1024, d, generator=gen).to(st.device)
    measure(rows, "W1a", "train step (batch 256)", counts,
            {k: train_step(m, x_train) for k, m in models.items()}, st, batch=256)
    measure(rows, "W1b", "log_prob (batch 1024, no grad)", counts,
            {k: no_grad(partial(m.log_prob, x_eval)) for k, m in models.items()}, st,
            batch=1024)
    print("  W1c  sampling 100 showers: measured by benchmarks/maf_sampling.py (not here)")


def run_w2(rows: list[dict[str, Any]], st: Settings) -> None:
    d, t, h, bins, bound = 8, 6, 128, 8, 3.0
    print(f"W2: RQS coupling D={d}, {t} layers, MLP 2x{h}, {bins} bins, bound {bound} "
          f"({ZUKO_NSF}: zuko NSF passes=2, hidden 2x96)")
    models = coupling_rqs_models(d, t, h, bins, bound, nsf_hidden=96)
    counts = prepare(models, "W2", st.device)
    gen = torch.Generator().manual_seed(SEED + 2)
    n_eval = 65_536
    x_train = torch.randn(4096, d, generator=gen).to(st.device)
    x_eval = torch.randn(n_eval, d, generator=gen).to(st.device)
    measure(rows, "W2a", "train step (batch 4096)", counts,
            {k: train_step(m, x_train) for k, m in models.items()}, st, batch=4096)
    measure(rows, "W2b", f"log_prob ({n_eval}, no grad)", counts,
            {k: no_grad(partial(m.log_prob, x_eval)) for k, m in models.items()}, st,
            batch=n_eval)
    measure(rows, "W2c", f"sample ({n_eval})", counts,
            {k: no_grad(partial(m.sample, n_eval)) for k, m in models.items()}, st,
            batch=n_eval)


def run_w3(rows: list[dict[str, Any]], st: Settings) -> None:
    d, t, h = 16, 5, 128
    print(f"W3: affine MAF D={d}, {t} transforms, MADE [{h}, {h}]")
    models = maf_affine_models(d, t, h)
    counts = prepare(models, "W3", st.device)
    gen = torch.Generator().manual_seed(SEED + 3)
    x_train = torch.randn(4096, d, generator=gen).to(st.device)
    measure(rows, "W3a", "train step (batch 4096)", counts,
            {k: train_step(m, x_train) for k, m in models.items()}, st, batch=4096)
    measure(rows, "W3b", "sample (10000)", counts,
            {k: no_grad(partial(m.sample, 10_000)) for k, m in models.items()}, st,
            batch=10_000)


# ----------------------------------------------------------------------------------------------
# Q: quality on a ring of Gaussians with exact density

RING_MODES, RING_RADIUS, RING_SIGMA = 8, 2.0, 0.25


def ring_centers(dtype: torch.dtype = torch.float32) -> Tensor:
    angles = 2 * math.pi * torch.arange(RING_MODES, dtype=torch.float64) / RING_MODES
    return (RING_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)).to(dtype)


def ring_sample(n: int, gen: torch.Generator) -> Tensor:
    """``n`` draws from the equal-weight mixture of 8 isotropic Gaussians on a circle."""
    k = torch.randint(RING_MODES, (n,), generator=gen)
    return ring_centers()[k] + RING_SIGMA * torch.randn(n, 2, generator=gen)


def ring_log_prob(x: Tensor) -> Tensor:
    """Exact ``log p(x)`` of the ring mixture, ``[N, 2] -> [N]`` (computed in float64)."""
    x = x.double()
    sq = ((x[:, None, :] - ring_centers(torch.float64)[None]) ** 2).sum(-1)
    log_comp = -0.5 * sq / RING_SIGMA**2 - math.log(2 * math.pi * RING_SIGMA**2)
    return torch.logsumexp(log_comp, dim=1) - math.log(RING_MODES)


def run_q(rows: list[dict[str, Any]], st: Settings, steps: int, n_kl: int) -> dict[str, Any]:
    d, t, h, bins, bound, batch = 2, 6, 128, 8, 3.0, 512
    print(f"Q: RQS coupling D={d} ({t} layers, MLP 2x{h}) on a ring of {RING_MODES} Gaussians, "
          f"{steps} Adam steps (lr {LR}, batch {batch}), KL on {n_kl:,} samples")
    models = coupling_rqs_models(d, t, h, bins, bound)
    counts = prepare(models, "Q", st.device)
    steps_fn = {}
    gen = torch.Generator().manual_seed(SEED + 4)
    batches: list[Tensor] = []
    for name, m in models.items():
        opt = torch.optim.Adam(m.module.parameters(), lr=LR)

        def step(m: Model = m, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            (-m.log_prob(batches[0]).mean()).backward()
            opt.step()

        steps_fn[name] = step
    names = list(models)
    wall = dict.fromkeys(names, 0.0)
    sync = st.sync
    for it in range(steps):  # same batch for every library; rotating order within a step
        batches[:] = [ring_sample(batch, gen).to(st.device)]
        shift = it % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            steps_fn[name]()
            sync()
            wall[name] += time.perf_counter() - start
    x = ring_sample(n_kl, torch.Generator().manual_seed(SEED + 5))
    log_p = ring_log_prob(x)
    kl: dict[str, dict[str, float]] = {}
    for name, m in models.items():
        m.module.eval()
        with torch.no_grad():
            log_q = torch.cat([m.log_prob(c.to(st.device)).double().cpu()
                               for c in x.split(16_384)])
        diff = log_p - log_q
        finite = bool(torch.isfinite(diff).all())
        kl[name] = {"kl": float(diff.mean()), "se": float(diff.std() / math.sqrt(n_kl)),
                    "finite": finite}
    ratios = {f"flowctl/{k}": wall["flowctl"] / v for k, v in wall.items() if k != "flowctl"}
    for name in names:
        print(f"  Q    {name:<9} KL {kl[name]['kl']:.4f} ± {kl[name]['se']:.4f} nats   "
              f"train {wall[name]:.1f} s", flush=True)
    result = {"id": "Q", "workload": f"train {steps} steps (batch {batch})", "parameters": counts,
              "median_s": wall, "ratios": ratios, "kl": kl, "steps": steps, "batch": batch,
              "kl_samples": n_kl, "load_average": load_average()}
    rows.append(result)
    return result


# ----------------------------------------------------------------------------------------------
# Report


def report(rows: list[dict[str, Any]]) -> str:
    libs = [name for name in (*LIBRARIES, ZUKO_NSF) if any(name in r["median_s"] for r in rows)]
    peers = [name for name in libs if name != "flowctl"]
    header = ["workload", *libs, *(f"flowctl/{p}" for p in peers)]
    table = []
    for r in rows:
        med = r["median_s"]
        cells = [f"{r['id']} {r['workload']}"]
        cells += [format_seconds(med.get(name)) for name in libs]
        cells += [f"{r['ratios'][f'flowctl/{p}']:.2f}" if p in med else "-" for p in peers]
        table.append(cells)
    lines = [format_table(header, table), ""]
    paired_rows = [[f"{r['id']} {r['workload']}",
                    *(f"{r['paired_ratios'][f'flowctl/{p}']:.2f}"
                      if f"flowctl/{p}" in r.get("paired_ratios", {}) else "-" for p in peers)]
                   for r in rows if "paired_ratios" in r]
    cpu_rows = [[f"{r['id']} {r['workload']}",
                 *(f"{r['cpu_ratios'][f'flowctl/{p}']:.2f}"
                   if f"flowctl/{p}" in r.get("cpu_ratios", {}) else "-" for p in peers)]
                for r in rows if "cpu_ratios" in r]
    if paired_rows:
        lines += [("per-repetition ratios (median over repetitions of flowctl/peer timed in the "
                   "same repetition; robust to load drift):"),
                  format_table(["workload", *(f"flowctl/{p}" for p in peers)], paired_rows), ""]
    if cpu_rows:
        lines += [("process CPU-time ratios (median CPU seconds per call, flowctl/peer; the "
                   "work done, robust to other jobs on the machine when --threads 1):"),
                  format_table(["workload", *(f"flowctl/{p}" for p in peers)], cpu_rows), ""]
    lines.append("parameters:")
    seen: set[str] = set()
    for r in rows:
        key = r["id"].rstrip("abc")
        if key not in seen:
            seen.add(key)
            lines.append(f"  {key}: " + ", ".join(f"{k} {v:,}" for k, v in r["parameters"].items()))
    for r in rows:
        if r["id"] == "Q":
            lines.append("Q KL(p||q) in nats (± Monte-Carlo standard error), training wall time:")
            for name, v in r["kl"].items():
                lines.append(f"  {name:<9} {v['kl']:.4f} ± {v['se']:.4f}   "
                             f"{r['median_s'][name]:.1f} s")
    lines.append("ratios < 1: flowctl faster; W1c (MAF sampling): benchmarks/maf_sampling.py")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 warm-up, 2 repetitions, Q with 200 steps and 20k samples")
    p.add_argument("--only", default=",".join(WORKLOADS),
                   help="comma-separated subset of W1,W2,W3,Q (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--reps", type=int, default=None, help="measured repetitions (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    p.add_argument("--malloc", default="default", choices=["default", "tuned"],
                   help="tuned: glibc thresholds as the flowctl command sets them "
                        "(flowctl/allocator.py), for every library alike (default: untouched)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    # nflows warns about its own spline initialisation at every coupling layer
    warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    malloc_tuned = args.malloc == "tuned" and tune_malloc()
    if args.malloc == "tuned" and not malloc_tuned:
        raise SystemExit("--malloc tuned: glibc's mallopt is not available here")
    device = torch.device(args.device)
    st = Settings(device=device,
                  warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
                  reps=args.reps if args.reps is not None else (2 if args.quick else 5),
                  quick=args.quick)
    q_steps, q_samples = (200, 20_000) if args.quick else (2000, 100_000)
    info = machine_info(device, {name: package_version(name)
                                 for name in ("zuko", "nflows", "normflows")})
    print(f"torch {info['torch']}, {info['threads']} threads, {info['cpu']}, device {device}; "
          f"{st.warmup} warm-up + {st.reps} repetitions, interleaved; malloc {args.malloc}",
          flush=True)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    path = None if args.no_save else results_path("flows")

    def save() -> None:  # after every workload, so an interrupted run keeps what it measured
        if path is not None:
            save_results(path, {
                "benchmark": "flows", "machine": info, "quick": args.quick, "only": only,
                "malloc": args.malloc,
                "warmup": st.warmup, "reps": st.reps, "total_s": time.perf_counter() - start,
                "results": rows})

    runners: dict[str, Callable[[], Any]] = {
        "W1": partial(run_w1, rows, st), "W2": partial(run_w2, rows, st),
        "W3": partial(run_w3, rows, st), "Q": partial(run_q, rows, st, q_steps, q_samples)}
    for w in WORKLOADS:
        if w in only:
            runners[w]()
            save()
            gc.collect()
    total = time.perf_counter() - start
    print()
    print(report(rows))
    print(f"total {total:.0f} s")
    if path is not None:
        save()
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
