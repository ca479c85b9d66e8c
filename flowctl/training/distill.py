r"""Probability density distillation of an IAF student from a frozen MAF teacher.

CaloFlow v2 (Krause & Shih, arXiv:2110.11377; reference/caloflow.md §4). Teacher and student
are flows whose chains have the same structure (same preprocessing, same permutations; the
teacher's autoregressive layers are :class:`~flowctl.flows.MaskedAutoregressive`, the
student's are :class:`~flowctl.flows.Inverse` of one, i.e. IAF layers that sample in one pass).

With ``χ²(a, b) = mean_batch Σ_dims (a − b)²`` the loss is ``(1 − β) L_z + β L_x``:

* ``L_x`` (real data ``x``): teacher ``x → z_T`` (no gradient), student ``z_T → x_S``;
  ``χ²(x_S, x)`` + Σ χ² over the intermediate states + Σ χ² over the conditioner outputs θ.
* ``L_z`` (the student's own samples): ``z ~ N(0, 1)``, student ``z → x_S``, teacher
  ``x_S → z_T`` (gradient flows through the frozen teacher); ``χ²(z_T, z)`` + the same
  intermediate and θ terms.

The θ terms compare the element-wise maps of matching layers in one convention: the teacher's
θ parametrises ``u = τ(v)`` (data side → latent side), the student's (an IAF samples
``v = τ_S(u)``) the inverse map. Both are compared through the knots of the data→latent map:
``(log-softmax widths, log-softmax heights, log knot derivatives)``, with the student's widths
and heights swapped and its derivatives inverted (the student's spline then passes through
the mirrored knots with inverse slopes; it inverts the teacher's exactly at the knots, only
approximately in between, since the inverse of an RQ spline is not an RQ spline). The affine
family is compared exactly as ``(log-scale, shift)``. A student built with ``iaf_map:
inverse`` (element-wise maps :class:`~flowctl.flows.Inverted`, as CaloFlow's ``IAFRQS``)
samples through the inverse of its spline, so its θ already describe the data→latent map and
are compared as they are; :func:`init_from_teacher` then copies the teacher's conditioners
unchanged.

Validation/model selection uses ``KL(student ‖ teacher) ≈ mean[log q_S(x) − log p_T(x)]`` on
student samples (cheap both ways: one pass each), as in CaloFlow v2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowctl.flows import (
    RQS,
    Affine,
    Flow,
    Inverse,
    Inverted,
    MaskedAutoregressive,
    Permutation,
)
from flowctl.flows.splines import knot_derivatives

__all__ = ["DistillLoss", "canonical_params", "check_compatible", "copy_permutations",
           "init_from_teacher", "student_states", "teacher_states"]

ContextSampler = Callable[[int, torch.device, torch.dtype], Tensor]


def _autoregressive(t: nn.Module) -> tuple[MaskedAutoregressive | None, bool]:
    """(the MaskedAutoregressive inside ``t``, whether ``t`` is an IAF layer)."""
    if isinstance(t, MaskedAutoregressive):
        return t, False
    if isinstance(t, Inverse) and isinstance(t.base_transform, MaskedAutoregressive):
        return t.base_transform, True
    return None, False


def _unwrap(family: nn.Module) -> tuple[nn.Module, bool]:
    """(the element-wise family under an :class:`Inverted`, whether it was inverted)."""
    if isinstance(family, Inverted):
        return family.base, True
    return family, False


def _layers(flow: Flow) -> list[nn.Module]:
    return list(flow.transform.transforms)


def _n_pre(flow: Flow) -> int:
    """Number of leading layers before the first autoregressive one (preprocessing)."""
    for i, t in enumerate(_layers(flow)):
        if _autoregressive(t)[0] is not None:
            return i
    return len(_layers(flow))


def check_compatible(teacher: Flow, student: Flow) -> None:
    """Raise ValueError unless the chains match layer by layer (MAF ↔ IAF, same perms)."""
    tl, sl = _layers(teacher), _layers(student)
    if len(tl) != len(sl):
        raise ValueError(f"teacher has {len(tl)} layers, student {len(sl)}; they must match")
    for i, (a, b) in enumerate(zip(tl, sl)):
        ma, inv_a = _autoregressive(a)
        mb, inv_b = _autoregressive(b)
        if (ma is None) != (mb is None):
            raise ValueError(f"layer {i}: {type(a).__name__} (teacher) vs {type(b).__name__}")
        if ma is not None:
            if inv_a or not inv_b:
                raise ValueError(f"layer {i}: the teacher must be a MAF and the student an IAF")
            fa, fb = _unwrap(ma.family)[0], _unwrap(mb.family)[0]
            if type(fa) is not type(fb):
                raise ValueError(f"layer {i}: element-wise maps differ "
                                 f"({type(fa).__name__} vs {type(fb).__name__})")
        elif isinstance(a, Permutation) and not torch.equal(a.perm, b.perm):
            raise ValueError(f"layer {i}: permutations differ (copy_permutations first)")


@torch.no_grad()
def copy_permutations(teacher: Flow, student: Flow) -> int:
    """Give the student the teacher's permutations (CaloFlow's ``teacher_perm``); returns
    how many were copied."""
    n = 0
    for a, b in zip(_layers(teacher), _layers(student)):
        if isinstance(a, Permutation) and isinstance(b, Permutation):
            # new tensors, not copy_: layers built from one spec may share a buffer
            b.perm = a.perm.clone()
            b.inverse_perm = a.inverse_perm.clone()
            n += 1
    return n


def _mirror(family: nn.Module) -> tuple[Tensor, Tensor]:
    """(index, sign) ``[P]`` taking a teacher conditioner's raw outputs to a student's whose
    element-wise map is, to first order, the inverse of the teacher's (see
    :func:`init_from_teacher`)."""
    if isinstance(family, RQS):
        k = family.bins
        p = family.num_params
        idx = torch.arange(p)
        idx[:k], idx[k:2 * k] = torch.arange(k, 2 * k), torch.arange(k)
        sign = torch.ones(p)
        sign[2 * k:] = -1.0
        return idx, sign
    if isinstance(family, Affine):
        return torch.arange(2), -torch.ones(2)
    raise ValueError(f"no mirrored parameters for element-wise family {type(family).__name__}")


@torch.no_grad()
def init_from_teacher(teacher: Flow, student: Flow) -> int:
    """Start each student IAF layer from its teacher MAF layer's conditioner; returns how
    many layers were copied.

    A student built with ``iaf_map: inverse`` (its maps are :class:`~flowctl.flows.Inverted`)
    gets the teacher's weights unchanged: it samples ``x = τ⁻¹(z; θ_T(z_<d))``, the teacher's
    exact inverse except that the conditioner sees the latent side instead of the data side.
    Otherwise the output rows of every dimension are mirrored: RQS widths and heights swapped
    and derivative logits negated (the knots of the inverse spline; ``1/d`` is ``-logit`` to
    first order around derivative 1), affine ``(log-scale, shift)`` negated, which inverts the
    spline only at its knots. On the CaloGAN e+ teacher of docs/calo.md §6 the untrained
    student's KL(student‖teacher) is 65 nats with ``iaf_map: inverse`` and 352 mirrored. Not
    in CaloFlow v2, which starts the student from scratch.
    Needs equal conditioner shapes (hidden widths, context, residual); raises ValueError
    naming the layer otherwise. Run :func:`copy_permutations` first.
    """
    n = 0
    for i, (a, b) in enumerate(zip(_layers(teacher), _layers(student))):
        ma, _ = _autoregressive(a)
        mb, inv_b = _autoregressive(b)
        if ma is None or mb is None or not inv_b:
            continue
        src, dst = ma.made.state_dict(), mb.made.state_dict()
        if src.keys() != dst.keys() or any(src[k].shape != dst[k].shape for k in src):
            raise ValueError(f"layer {i}: the student's conditioner differs in shape from the "
                             "teacher's (hidden widths, context, residual); it cannot start "
                             "from the teacher's weights")
        fb, inverted = _unwrap(mb.family)
        if type(ma.family) is not type(fb) or ma.family.num_params != fb.num_params:
            raise ValueError(f"layer {i}: element-wise maps differ")
        new = {k: v.clone() for k, v in src.items()}
        if inverted:
            mb.made.load_state_dict(new)
            n += 1
            continue
        idx, sign = _mirror(ma.family)
        d, p = ma.made.features, ma.made.params_per_dim
        w = src["output_layer.weight"].view(d, p, -1)[:, idx] * sign.to(src[
            "output_layer.weight"])[None, :, None]
        bias = src["output_layer.bias"].view(d, p)[:, idx] * sign.to(src["output_layer.bias"])
        new["output_layer.weight"] = w.reshape(d * p, -1).contiguous()
        new["output_layer.bias"] = bias.reshape(-1).contiguous()
        mb.made.load_state_dict(new)
        n += 1
    return n


def canonical_params(family: nn.Module, params: Tensor, inverse_map: bool) -> Tensor:
    """Conditioner output ``[N, D, P]`` -> a description of the data→latent element-wise map.

    ``inverse_map=True`` for a student (IAF) layer, whose ``params`` define the latent→data map.
    """
    if isinstance(family, RQS):
        k = family.bins
        w, h, d = params[..., :k], params[..., k:2 * k], params[..., 2 * k:]
        logd = torch.log(knot_derivatives(d))
        if inverse_map:
            w, h, logd = h, w, -logd
        return torch.cat([F.log_softmax(w, -1), F.log_softmax(h, -1), logd], -1)
    if isinstance(family, Affine):
        c = family.log_scale_bound
        s = c * torch.tanh(params[..., 0] / c)
        t = params[..., 1]
        if inverse_map:
            s, t = -s, -t * torch.exp(-s)
        return torch.stack([s, t], -1)
    raise ValueError(f"no canonical form for element-wise family {type(family).__name__}")


def teacher_states(teacher: Flow, x: Tensor, context: Tensor | None
                   ) -> tuple[list[Tensor], list[Tensor]]:
    """Teacher data→latent pass after preprocessing.

    Returns the states ``[s_0 = preprocessed x, s_1, ..., s_L = z]`` between layers and the
    canonical θ of each autoregressive layer (in chain order).
    """
    layers = _layers(teacher)
    n_pre = _n_pre(teacher)
    for t in layers[:n_pre]:
        x = t(x, context)[0]
    return teacher_states_from(teacher, x, context)


def teacher_states_from(teacher: Flow, x_pre: Tensor, context: Tensor | None
                        ) -> tuple[list[Tensor], list[Tensor]]:
    """The teacher's pass from an already preprocessed ``x_pre`` (see :func:`teacher_states`)."""
    x, states, thetas = x_pre, [x_pre], []
    for t in _layers(teacher)[_n_pre(teacher):]:
        ma, _ = _autoregressive(t)
        if ma is not None:
            p = ma.made(x, context)
            thetas.append(canonical_params(ma.family, p, inverse_map=False))
            x = ma.family(x, p)[0]
        else:
            x = t(x, context)[0]
        states.append(x)
    return states, thetas


def student_states(student: Flow, z: Tensor, context: Tensor | None
                   ) -> tuple[list[Tensor], list[Tensor]]:
    """Student latent→data pass (one MADE pass per layer), up to the preprocessed data.

    Returns states and canonical θ in **chain order** (as :func:`teacher_states`), so index
    ``k`` of both lists refers to the same position of the two chains.
    """
    layers = _layers(student)
    n_pre = _n_pre(student)
    states, thetas = [z], []
    for t in reversed(layers[n_pre:]):
        ma, _ = _autoregressive(t)
        if ma is not None:
            p = ma.made(z, context)
            family, inverted = _unwrap(ma.family)
            thetas.append(canonical_params(family, p, inverse_map=not inverted))
            z = ma.family(z, p)[0]
        else:
            z = t.inverse(z, context)[0]
        states.append(z)
    return states[::-1], thetas[::-1]


def _chi2(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).flatten(1).sum(1).mean()


@dataclass
class DistillTerms:
    """Which terms enter the loss (all on by default, as CaloFlow's ``--fully_guided``)."""

    intermediate: bool = True
    params: bool = True


class DistillLoss:
    """``loss_fn(student, batch)`` for :func:`flowctl.training.train`.

    ``batch = (x, context)`` holds real data (the flow's input units). In training mode it
    returns ``(1 − β) L_z + β L_x``; in eval mode (the trainer's validation) the KL estimate,
    so the best epoch is the lowest KL. ``context_sampler(n, device, dtype)`` draws contexts
    for the z-part (CaloFlow: E_inc ~ U and layer energies from Flow I); without it the
    batch's contexts are reused in shuffled order.
    """

    def __init__(self, teacher: Flow, beta: float = 0.5,
                 context_sampler: ContextSampler | None = None,
                 terms: DistillTerms | None = None) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.beta = beta
        self.context_sampler = context_sampler
        self.terms = terms or DistillTerms()
        self.last: dict[str, float] = {}

    def _sync(self, ref: Tensor) -> None:
        p = next(self.teacher.parameters())
        if p.device != ref.device or p.dtype != ref.dtype:
            self.teacher.to(ref.device, ref.dtype)

    def _match(self, sa: list[Tensor], sb: list[Tensor], ta: list[Tensor], tb: list[Tensor],
               end: int) -> tuple[Tensor, Tensor, Tensor]:
        """(χ² at the end state ``end`` (0 = x, -1 = z), Σ intermediate, Σ θ)."""
        main = _chi2(sa[end], sb[end])
        zero = main.new_zeros(())
        inter = sum((_chi2(a, b) for a, b in zip(sa[1:-1], sb[1:-1])), zero) \
            if self.terms.intermediate else zero
        par = sum((_chi2(a, b) for a, b in zip(ta, tb)), zero) if self.terms.params else zero
        return main, inter, par

    def loss_x(self, student: Flow, x: Tensor, context: Tensor | None) -> Tensor:
        with torch.no_grad():
            ts, tt = teacher_states(self.teacher, x, context)
        ss, st = student_states(student, ts[-1], context)
        main, inter, par = self._match(ss, ts, st, tt, 0)
        self.last.update(x=float(main.detach()), x_inter=float(inter.detach()),
                         x_theta=float(par.detach()))
        return main + inter + par

    def loss_z(self, student: Flow, n: int, context: Tensor | None, ref: Tensor) -> Tensor:
        z = torch.randn(n, student.features, device=ref.device, dtype=ref.dtype)
        ss, st = student_states(student, z, context)
        x_pre = ss[0]
        # the teacher's pass from the student's (preprocessed) output
        ts, tt = teacher_states_from(self.teacher, x_pre, context)
        main, inter, par = self._match(ts, ss, tt, st, -1)
        self.last.update(z=float(main.detach()), z_inter=float(inter.detach()),
                         z_theta=float(par.detach()))
        return main + inter + par

    def _z_context(self, context: Tensor | None, n: int, ref: Tensor) -> Tensor | None:
        if context is None:
            return None
        if self.context_sampler is not None:
            return self.context_sampler(n, ref.device, ref.dtype)
        return context[torch.randperm(len(context), device=context.device)]

    @torch.no_grad()
    def kl(self, student: Flow, n: int, context: Tensor | None) -> Tensor:
        """``mean[log q_S(x) − log p_T(x)]`` over ``n`` student samples ``x``."""
        x, log_q = student.sample_and_log_prob(n, context)
        return (log_q - self.teacher.log_prob(x, context)).mean()

    def __call__(self, student: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        x = batch[0]
        context = batch[1] if len(batch) > 1 else None
        self._sync(x)
        if not student.training:
            return self.kl(student, len(x), context)  # type: ignore[arg-type]
        lx = self.loss_x(student, x, context)  # type: ignore[arg-type]
        zc = self._z_context(context, len(x), x)
        lz = self.loss_z(student, len(x), zc, x)  # type: ignore[arg-type]
        return (1.0 - self.beta) * lz + self.beta * lx
