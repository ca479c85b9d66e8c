"""Integrands on the unit hypercube for ``flowctl integrate``.

An :class:`Integrand` wraps a vectorised function ``f(x [N, D]) -> [N]`` on ``[0, 1]^D``
(evaluated in float64), its dimension, and its exact integral when known. The shipped ones:

* the i-flow suite (arXiv:2001.05486): ``gauss``, ``camel`` (D = 2..16, alpha = 0.2),
  ``circles`` (entangled circles, D = 2), ``annulus`` (D = 2), ``polynomial`` (any D);
* ``ridge``: a narrow, strongly correlated Gaussian ridge inside the cube (any D >= 2);
* physics: ``ee_qqg`` (e+e- -> q qbar g at O(alpha_s) with a y_cut on all pairs) and
  ``ee_mumu`` (e+e- -> mu+ mu- through the photon, optionally the Z).

Users bring their own with ``integrand.target=package.module:function``; see :func:`resolve`.
"""

from __future__ import annotations

from flowctl.integrands.base import Integrand, IntegrandError, load_target, resolve
from flowctl.integrands.physics import ee_mumu, ee_qqg, three_jet_rate
from flowctl.integrands.toys import annulus, camel, circles, gauss, polynomial, ridge

SHIPPED = {
    "gauss": gauss,
    "camel": camel,
    "circles": circles,
    "annulus": annulus,
    "polynomial": polynomial,
    "ee_qqg": ee_qqg,
    "ee_mumu": ee_mumu,
    "ridge": ridge,
}
"""Name -> factory ``(dim, **params) -> Integrand``."""

__all__ = [
    "SHIPPED",
    "Integrand",
    "IntegrandError",
    "annulus",
    "camel",
    "circles",
    "ee_mumu",
    "ee_qqg",
    "gauss",
    "load_target",
    "polynomial",
    "resolve",
    "ridge",
    "three_jet_rate",
]
