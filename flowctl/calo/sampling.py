"""Generation helpers shared by the calorimeter models: Flow I's energies turned into the
shower flows' context, generated normalised layers made valid before they are used, and the
shower flow(s) of a run behind one ``sample(ctx)`` (CaloFlow's Flow II, or iCaloFlow's
layer-0 flow then one flow per following layer)."""

from __future__ import annotations

import torch

__all__ = ["ShowerSampler", "clean_layer", "energy_to_context"]


def energy_to_context(flow1: torch.nn.Module, e_inc: torch.Tensor, scale: float = 1.0,
                       e_ref: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """E_inc [n] GeV -> (layer energies [n, L] MeV, shower-flow context [n, 1 + L])."""
    from flowctl.calo.energy import decode_energies, shower_context

    ctx1 = torch.log10(e_inc / e_ref)[:, None]
    u = flow1.sample(len(e_inc), ctx1)
    u = torch.nan_to_num(u, nan=0.0)
    e = decode_energies(u.to(e_inc.dtype), e_inc, scale)
    return e, shower_context(e_inc, e, e_ref).to(ctx1.dtype)


def clean_layer(x: torch.Tensor) -> torch.Tensor:
    """A generated normalised layer made valid: finite, >= 0, sum 1."""
    x = torch.nan_to_num(x, nan=0.0).clamp_min(0.0)
    s = x.sum(1, keepdim=True)
    return torch.where(s > 0, x / s.clamp_min(1e-30), torch.full_like(x, 1.0 / x.shape[1]))


class ShowerSampler:
    """The shower flow(s) of a run: ``sample(ctx [n, 1 + L]) -> normalised voxels [n, V]``;
    ``first`` is iCaloFlow's layer-0 flow (None for CaloFlow's single Flow II)."""

    def __init__(self, flow: torch.nn.Module, sizes: list[int],
                 first: torch.nn.Module | None = None) -> None:
        self.flow, self.sizes, self.first = flow, sizes, first

    def sample(self, ctx: torch.Tensor) -> torch.Tensor:
        n = len(ctx)
        if self.first is None:
            return self.flow.sample(n, ctx)
        from flowctl.calo.layerwise import sample_layers

        first, flow = self.first, self.flow
        x = sample_layers(lambda c: first.sample(len(c), c), lambda c: flow.sample(len(c), c),
                          ctx[:, 0], ctx[:, 1:], clean_layer)
        return x.reshape(n, -1)
