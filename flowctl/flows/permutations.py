"""Fixed feature permutations between flow layers (log-det 0)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .core import Transform


class Permutation(Transform):
    """``z = x[:, perm]``; ``perm`` is a permutation of ``0..D-1``."""

    def __init__(self, perm: Sequence[int] | Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long).clone()  # own storage, never shared
        d = perm.numel()
        if perm.dim() != 1 or not torch.equal(torch.sort(perm).values, torch.arange(d)):
            raise ValueError(f"not a permutation of 0..{d - 1}: {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z.index_select(1, self.inverse_perm), z.new_zeros(z.shape[0])


def make_permutations(spec: str | Sequence, features: int, layers: int,
                      seed: int = 0) -> list[Tensor | None]:
    """Permutations to apply before layers ``1..layers-1`` (entry 0 is always None).

    ``spec``: ``"none"``, ``"reverse"``, ``"random"`` (seeded), one explicit index list used
    between every pair of layers, or a list of ``layers - 1`` index lists.
    """
    out: list[Tensor | None] = [None]
    if isinstance(spec, str):
        if spec == "none":
            return out + [None] * (layers - 1)
        if spec == "reverse":
            return out + [torch.arange(features - 1, -1, -1)] * (layers - 1)
        if spec == "random":
            gen = torch.Generator().manual_seed(seed)
            return out + [torch.randperm(features, generator=gen) for _ in range(layers - 1)]
        raise ValueError(f"unknown permutation {spec!r}; expected none, reverse, random "
                         "or an explicit index list")
    spec = list(spec)
    if spec and all(isinstance(p, int) for p in spec):
        if len(spec) != features:
            raise ValueError(f"permutation has {len(spec)} entries, expected {features}")
        return out + [torch.tensor(spec)] * (layers - 1)
    if len(spec) != layers - 1:
        raise ValueError(f"expected {layers - 1} permutations (one between each pair of "
                         f"layers), got {len(spec)}")
    for p in spec:
        if len(p) != features:
            raise ValueError(f"permutation has {len(p)} entries, expected {features}")
    return out + [torch.tensor(list(p)) for p in spec]
