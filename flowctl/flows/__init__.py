"""flowctl.flows: normalizing flows in pure PyTorch (no Hydra, files or plots).

Transforms map data to latent: ``forward(x, context) -> (z, log|det dz/dx|)`` and
``inverse(z, context) -> (x, log|det dx/dz|)``; :func:`build` makes any flow from a dict.
"""

from .autoregressive import MaskedAutoregressive, iaf_layer, set_cuda_graph
from .build import DEFAULTS, build
from .continuous import ContinuousFlow, ContinuousTransform, VectorField
from .core import Chain, Flow, Inverse, Transform, broadcast_context
from .coupling import MLP, Coupling, alternating_masks, binary_masks
from .distributions import BoxUniform, StandardNormal, make_base
from .elementwise import RQS, Affine, ElementwiseFamily, Inverted, UnitRQS, make_family
from .made import MADE, MaskedLinear
from .manifold import ManifoldFlow
from .monotonic import Sigmoidal
from .normalization import ActNorm, BatchNorm
from .permutations import Permutation, make_permutations
from .preprocessing import Logit, MinMax, Standardize
from .splines import rational_quadratic_spline, unconstrained_rqs, unit_rqs
from .symmetry import SymmetricFlow, make_symmetric

__all__ = [
    "DEFAULTS",
    "MADE",
    "MLP",
    "RQS",
    "ActNorm",
    "Affine",
    "BatchNorm",
    "BoxUniform",
    "Chain",
    "ContinuousFlow",
    "ContinuousTransform",
    "Coupling",
    "ElementwiseFamily",
    "Flow",
    "Inverse",
    "Inverted",
    "Logit",
    "ManifoldFlow",
    "MaskedAutoregressive",
    "MaskedLinear",
    "MinMax",
    "Permutation",
    "Sigmoidal",
    "StandardNormal",
    "Standardize",
    "SymmetricFlow",
    "Transform",
    "UnitRQS",
    "VectorField",
    "alternating_masks",
    "binary_masks",
    "broadcast_context",
    "build",
    "iaf_layer",
    "make_base",
    "make_family",
    "make_permutations",
    "make_symmetric",
    "rational_quadratic_spline",
    "set_cuda_graph",
    "unconstrained_rqs",
    "unit_rqs",
]
