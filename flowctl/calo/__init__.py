"""CaloFlow machinery: the CaloChallenge geometry (binning XML), the energy parametrisation of
L layers, the challenge's high-level features and iCaloFlow's layer-by-layer model.

* :mod:`flowctl.calo.geometry`: :func:`load_binning` (shipped ``ds1_photons``, ``ds1_pions``,
  ``ds2``, ``ds3`` or a file) -> :class:`Geometry`.
* :mod:`flowctl.calo.features`: the challenge's high-level features and classifier inputs.
* :mod:`flowctl.calo.layerwise`: iCaloFlow (arXiv:2305.11934) data layout and sampling.
"""

from flowctl.calo.geometry import BINNINGS, Geometry, GeometryError, load_binning

__all__ = ["BINNINGS", "Geometry", "GeometryError", "load_binning"]
