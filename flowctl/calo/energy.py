"""Flow I's unit-space energies for L layers in torch (the numpy pair lives in
:mod:`flowctl.data.calo`: ``energy_features`` / ``energies_from_features``).

``u0 = E_tot / (scale E_inc)``, ``u_i = E_{i-1} / sum_{j >= i-1} E_j`` (CaloFlow for the
CaloChallenge DS1, arXiv:2210.14245; for CaloGAN's 3 layers and scale 1 this is CaloFlow v1).
"""

from __future__ import annotations

import torch

__all__ = ["decode_energies", "shower_context"]


def decode_energies(u: torch.Tensor, e_inc_gev: torch.Tensor, scale: float = 1.0
                    ) -> torch.Tensor:
    """``u [n, L]`` (clamped to [0, 1]) and ``E_inc [n]`` GeV -> layer energies ``[n, L]`` MeV."""
    u = u.clamp(0.0, 1.0)
    rem = u[:, 0] * scale * e_inc_gev * 1000.0
    out = []
    for i in range(u.shape[1] - 1):
        e = u[:, i + 1] * rem
        out.append(e)
        rem = rem - e
    out.append(rem)
    return torch.stack(out, 1).clamp_min(0.0)


def shower_context(e_inc_gev: torch.Tensor, e_layers_mev: torch.Tensor, e_ref_gev: float
                   ) -> torch.Tensor:
    """Flow II context ``[n, 1 + L]``: ``log10(E_inc / e_ref)`` and ``log10(E_i/GeV + 1e-6)``."""
    return torch.cat([torch.log10(e_inc_gev / e_ref_gev)[:, None],
                      torch.log10(e_layers_mev / 1000.0 + 1e-6)], 1)
