"""``build(spec) -> Flow``: every flow kind from a plain dict (what a config group holds).

Example::

    >>> from flowctl.flows import build
    >>> flow = build({"kind": "maf", "features": 4, "context": 1, "transforms": 3,
    ...               "hidden": [32, 32], "transform": "rqs", "bins": 8, "tail_bound": 3.0})
    >>> flow.log_prob(torch.randn(5, 4), torch.randn(5, 1)).shape
    torch.Size([5])
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from .autoregressive import MaskedAutoregressive, iaf_layer
from .continuous import ContinuousFlow, ContinuousTransform, EquivariantField, VectorField
from .core import Chain, Flow, Transform
from .coupling import Coupling, alternating_masks, binary_masks
from .distributions import make_base
from .elementwise import ElementwiseFamily, Inverted, make_family
from .manifold import ManifoldFlow
from .monotonic import Sigmoidal
from .normalization import make_norm
from .permutations import Permutation, make_permutations
from .preprocessing import make_preprocessing
from .symmetry import SymmetricFlow, make_symmetric

KINDS = ("coupling", "maf", "iaf", "cnf", "mflow")
MFLOW_OWN = ("kind", "context", "latent", "latent_flow", "outer", "symmetry")

DEFAULTS: dict[str, Any] = {
    "kind": None,            # coupling | maf | iaf | cnf | mflow
    "features": None,        # D
    "context": 0,            # C (0 = unconditional)
    "transforms": 5,         # number of coupling / autoregressive layers
    "hidden": [64, 64],      # conditioner widths
    "transform": "rqs",      # affine | rqs | naf
    "bins": 8,               # spline bins K
    "sigmoids": 8,           # naf: sigmoid units per element-wise map
    "tail_bound": 3.0,       # spline box [-B, B] (identity outside)
    "logit_bound": None,     # rqs: soft bound on spline logits (3.45: zuko-like, stabler inverse)
    "dropout": 0.0,
    "residual": False,       # residual blocks in the conditioner
    "activation": "relu",
    "exact_loop": "incremental",  # maf sampling / iaf density: incremental | naive (both exact)
    "cuda_graph": False,     # maf sampling / iaf density on CUDA without autograd: CUDA graphs
    "iaf_map": "forward",    # iaf: sampling applies the map (forward) or its inverse (inverse)
    "permutation": None,     # none | reverse | random | [indices] | [[indices], ...]
    "seed": 0,               # seed of random permutations
    "norm": "none",          # none | actnorm | batchnorm (before each layer)
    "base": None,            # normal | uniform (default: normal, uniform for domain unit)
    "domain": "real",        # real | unit (flows on the unit hypercube)
    "mask": "alternating",   # coupling masks: alternating | binary (i-flow)
    "standardize": False,    # shorthand for preprocessing: [{kind: standardize}]
    "preprocessing": [],     # [{kind: minmax|logit|standardize, ...}, ...] applied first
    "symmetry": None,        # {group: dihedral, order: K} | {group: sign} | {group: permutation, particles: P}
    # cnf (transforms, transform, bins, permutation, norm, mask are not used):
    "trace": "exact",        # exact | hutchinson (training only; evaluation is exact)
    "solver": "dopri5",      # torchdiffeq method
    "rtol": 1.0e-6,          # adaptive solver tolerances
    "atol": 1.0e-6,
    "adjoint": False,        # adjoint-method gradients (memory independent of the steps)
    "step_size": 0.05,       # fixed-grid solvers (euler, rk4, ...)
    # mflow: the other keys shape the outer (manifold) flow
    "latent": None,          # d, the manifold's dimension (1 <= d < features)
    "outer": "coupling",     # kind of the outer flow on R^n (coupling | maf)
    "latent_flow": None,     # spec of the d-dim density flow (default: maf, 3 rqs layers)
}


def _check_keys(spec: Mapping[str, Any]) -> None:
    for key in spec:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown flow key {key!r}{hint} (valid: {', '.join(DEFAULTS)})")


def _int(spec: Mapping[str, Any], key: str, minimum: int) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"flow key {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def build(spec: Mapping[str, Any]) -> Flow | SymmetricFlow | ManifoldFlow:
    """Build a :class:`Flow` from a dict; see ``DEFAULTS`` for the keys and their defaults.

    With ``symmetry``, the flow is wrapped in a :class:`SymmetricFlow` (same interface)."""
    _check_keys(spec)
    sym = spec.get("symmetry")
    if sym is not None and spec.get("kind") == "cnf" and isinstance(sym, Mapping) \
            and sym.get("group") == "permutation":
        return _build_cnf_equivariant(spec, sym)
    if sym is not None:
        if spec.get("kind") == "mflow":
            raise ValueError("flow key 'symmetry' is not supported for kind 'mflow'")
        inner = build({k: v for k, v in spec.items() if k != "symmetry"})
        return make_symmetric(inner, spec["symmetry"])
    s = {**DEFAULTS, **dict(spec)}
    kind = s["kind"]
    if kind not in KINDS:
        raise ValueError(f"flow key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if s["features"] is None:
        raise ValueError("flow key 'features' is required")
    d = _int(s, "features", 1)
    c = _int(s, "context", 0)
    n_layers = _int(s, "transforms", 1)
    hidden = [int(h) for h in s["hidden"]]
    domain = s["domain"]
    if domain not in ("real", "unit"):
        raise ValueError(f"flow key 'domain' must be real or unit, got {domain!r}")
    if s["iaf_map"] not in ("forward", "inverse"):
        raise ValueError(f"flow key 'iaf_map' must be forward or inverse, got {s['iaf_map']!r}")
    if s["iaf_map"] == "inverse" and kind != "iaf":
        raise ValueError(f"flow key 'iaf_map: inverse' needs kind 'iaf', got {kind!r}")
    base = s["base"] or ("uniform" if domain == "unit" else "normal")
    pre: list[Transform] = [make_preprocessing(p, d) for p in s["preprocessing"]]
    if s["standardize"]:
        pre.insert(0, make_preprocessing({"kind": "standardize"}, d))
    if kind == "cnf":
        return _build_cnf(s, spec, pre, base, d, c, hidden)
    if kind == "mflow":
        return _build_mflow(s, spec, d, c, hidden)
    perm_spec = s["permutation"]
    if perm_spec is None:
        perm_spec = "random" if kind == "coupling" else "reverse"
    if kind == "coupling" and s["mask"] == "binary":
        perm_spec = "none"  # the binary pattern fixes which features talk to which
    perms = make_permutations(perm_spec, d, n_layers, seed=int(s["seed"]))

    if kind == "coupling":
        if s["mask"] == "binary":
            masks = binary_masks(d)
            if n_layers % len(masks):
                raise ValueError(f"binary masks come in groups of {len(masks)} for "
                                 f"{d} features; set transforms to a multiple of it")
            masks = masks * (n_layers // len(masks))
        elif s["mask"] == "alternating":
            masks = alternating_masks(d, n_layers, perms)
        else:
            raise ValueError(f"flow key 'mask' must be alternating or binary, got {s['mask']!r}")
        _check_coverage(masks, perms, d)

    layers = list(pre)
    common = {"hidden": hidden, "context": c, "residual": bool(s["residual"]),
              "dropout": float(s["dropout"]), "activation": s["activation"]}
    for i in range(n_layers):
        if perms[i] is not None:
            layers.append(Permutation(perms[i]))
        norm = make_norm(s["norm"], d)
        if norm is not None:
            layers.append(norm)
        family = _family(s, domain)
        if kind == "coupling":
            layers.append(Coupling(masks[i], family, **common))
        elif kind == "maf":
            layers.append(MaskedAutoregressive(d, family, exact_loop=s["exact_loop"],
                                               cuda_graph=bool(s["cuda_graph"]), **common))
        else:
            if s["iaf_map"] == "inverse":
                family = Inverted(family)
            layers.append(iaf_layer(d, family, exact_loop=s["exact_loop"],
                                    cuda_graph=bool(s["cuda_graph"]), **common))
    return Flow(Chain(layers), make_base(base, d), features=d, context=c)


def _build_cnf(s: Mapping[str, Any], spec: Mapping[str, Any], pre: list[Transform],
               base: str, d: int, c: int, hidden: list[int]) -> Flow:
    if s["domain"] != "real" or base != "normal":
        raise ValueError("kind 'cnf' needs domain real and base normal (flow matching "
                         "interpolates to a Gaussian)")
    activation = spec.get("activation", "silu")  # smooth default: the solver needs a smooth v
    field = VectorField(d, hidden, context=c, activation=activation)
    for key in ("rtol", "atol", "step_size"):
        if not isinstance(s[key], (int, float)) or isinstance(s[key], bool) or s[key] <= 0:
            raise ValueError(f"flow key {key!r} must be a positive number, got {s[key]!r}")
    cnf = ContinuousTransform(field, trace=s["trace"], solver=str(s["solver"]),
                              rtol=s["rtol"], atol=s["atol"], adjoint=bool(s["adjoint"]),
                              step_size=s["step_size"])
    return ContinuousFlow(Chain([*pre, cnf]), make_base(base, d), features=d, context=c)


def _build_cnf_equivariant(spec: Mapping[str, Any], sym: Mapping[str, Any]) -> Flow:
    """``kind: cnf`` with ``symmetry: {group: permutation, particles: P}``: a permutation-
    equivariant vector field and the i.i.d. normal base, exactly invariant for any P (no orbit
    enumeration). Preprocessing would treat particles differently, so it is refused."""
    unknown = set(sym) - {"group", "particles"}
    if unknown:
        raise ValueError(f"symmetry keys {sorted(unknown)} unknown; expected group, particles")
    s = {**DEFAULTS, **{k: v for k, v in spec.items() if k != "symmetry"}}
    if s["standardize"] or s["preprocessing"]:
        raise ValueError("a permutation-symmetric cnf needs standardize: false and no "
                         "preprocessing (per-feature statistics differ between particles)")
    if s["features"] is None:
        raise ValueError("flow key 'features' is required")
    d, c = _int(s, "features", 1), _int(s, "context", 0)
    base = s["base"] or "normal"
    flow = _build_cnf(s, spec, [], base, d, c, [int(h) for h in s["hidden"]])
    field = EquivariantField(int(sym.get("particles", 0)), d, [int(h) for h in s["hidden"]],
                             context=c, activation=spec.get("activation", "silu"))
    flow.cnf.field = field
    return flow


def _build_mflow(s: Mapping[str, Any], spec: Mapping[str, Any], d: int, c: int,
                 hidden: list[int]) -> ManifoldFlow:
    if s["latent"] is None:
        raise ValueError("kind 'mflow' needs the key 'latent' (the manifold's dimension)")
    latent = _int(s, "latent", 1)
    if s["outer"] not in ("coupling", "maf"):
        raise ValueError(f"flow key 'outer' must be coupling or maf, got {s['outer']!r}")
    outer_spec = {k: v for k, v in spec.items() if k not in MFLOW_OWN}
    outer = build({**outer_spec, "kind": s["outer"], "features": d}).transform
    inner = {"kind": "maf", "transforms": 3, "hidden": hidden, "transform": "rqs",
             **dict(s["latent_flow"] or {}), "features": latent, "context": c}
    return ManifoldFlow(outer, build(inner), features=d, latent=latent)


def _family(s: Mapping[str, Any], domain: str) -> ElementwiseFamily:
    if s["transform"] == "naf":
        if domain != "real":
            raise ValueError("transform 'naf' maps R onto R; domain 'unit' needs 'rqs'")
        return Sigmoidal(_int(s, "sigmoids", 1))
    if s["transform"] not in ("affine", "rqs"):
        raise ValueError(f"unknown transform {s['transform']!r}; "
                         "expected 'affine', 'rqs' or 'naf'")
    bound = s.get("logit_bound")
    return make_family(s["transform"], int(s["bins"]), float(s["tail_bound"]), domain,
                       None if bound is None else float(bound))


def _check_coverage(masks: list, perms: list, d: int) -> None:
    """Raise if some feature is never transformed by any coupling layer."""
    import torch

    current = torch.arange(d)
    seen = torch.zeros(d, dtype=torch.bool)
    for mask, perm in zip(masks, perms):
        if perm is not None:
            current = current[perm]
        seen[current[mask]] = True
    if not bool(seen.all()):
        missing = torch.nonzero(~seen).flatten().tolist()
        raise ValueError(f"coupling masks leave features {missing} untransformed; "
                         "use more transforms or another permutation")
