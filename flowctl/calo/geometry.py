"""Calorimeter geometry from the CaloChallenge binning XML (arXiv:2410.21611).

The XML: ``<Bins><Bin pid=".." name="photon|pion|electron"><Layer id="k" r_edges="0,5,.."
n_bin_alpha="a"/>...``. A layer whose ``r_edges`` is ``"0"`` holds no voxels; a layer holds
``(len(r_edges) - 1) * n_bin_alpha`` voxels ordered alpha-major (for each alpha bin, every r
bin); alpha bins split [-pi, pi) evenly; r is in mm. The voxel of (alpha bin j, r bin i) sits
at the bin centres ``x = r_mid cos(alpha_mid)``, ``y = r_mid sin(alpha_mid)`` (the challenge's
"eta" and "phi"). The four official binnings ship with flowctl (``ds1_photons``,
``ds1_pions``, ``ds2``, ``ds3``); :func:`load_binning` takes one of those names or a file.

>>> g = load_binning("ds1_photons")
>>> g.n_voxels, g.layer_ids, g.layer_sizes
(368, [0, 1, 2, 3, 12], [8, 160, 190, 5, 5])
"""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BINNINGS", "DATASET_VOXELS", "Geometry", "Layer", "binning_path", "load_binning"]

BINNING_DIR = Path(__file__).with_name("binning")
#: Names of the shipped binnings (``data.binning=NAME``).
BINNINGS = ("ds1_photons", "ds1_pions", "ds2", "ds3")
#: The challenge's dataset names by voxel count (evaluate.py ``check_file``).
DATASET_VOXELS = {368: "1-photons", 533: "1-pions", 6480: "2", 40500: "3"}


class GeometryError(ValueError):
    """A binning file that cannot be read (the app turns it into one line)."""


@dataclass(frozen=True)
class Layer:
    """One binned layer: ``id`` from the XML, radial edges in mm, number of alpha bins."""

    id: int
    r_edges: tuple[float, ...]
    n_alpha: int

    @property
    def n_r(self) -> int:
        return len(self.r_edges) - 1

    @property
    def size(self) -> int:
        return self.n_r * self.n_alpha

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(r_mid [size] mm, alpha_mid [size] rad) in the file's voxel order (alpha-major)."""
        r = np.asarray(self.r_edges, np.float64)
        r_mid = 0.5 * (r[:-1] + r[1:])
        a = np.linspace(-math.pi, math.pi, self.n_alpha + 1)
        a_mid = 0.5 * (a[:-1] + a[1:])
        return np.tile(r_mid, self.n_alpha), np.repeat(a_mid, self.n_r)


@dataclass(frozen=True)
class Geometry:
    """The binned layers of one particle's binning (empty layers dropped)."""

    particle: str
    pid: int
    layers: tuple[Layer, ...]
    source: str = ""

    @property
    def n_voxels(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def layer_ids(self) -> list[int]:
        return [layer.id for layer in self.layers]

    @property
    def layer_sizes(self) -> list[int]:
        return [layer.size for layer in self.layers]

    @property
    def layer_slices(self) -> list[slice]:
        edges = np.cumsum([0, *self.layer_sizes])
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    @property
    def dataset(self) -> str:
        """The challenge's dataset name (``1-photons`` ...) or ``custom``."""
        return DATASET_VOXELS.get(self.n_voxels, "custom")

    def image_shapes(self) -> tuple[tuple[int, int], ...]:
        """Per layer ``(n_alpha, n_r)``: a layer's voxels reshaped to an image."""
        return tuple((layer.n_alpha, layer.n_r) for layer in self.layers)

    def centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, r, alpha)`` bin centres of every voxel ``[V]`` (mm, mm, mm, rad)."""
        rs, als = zip(*(layer.centres() for layer in self.layers))
        r, a = np.concatenate(rs), np.concatenate(als)
        return r * np.cos(a), r * np.sin(a), r, a


def binning_path(name_or_path: str | Path) -> Path:
    """A shipped binning's file for a name in :data:`BINNINGS`, else the path itself."""
    s = str(name_or_path)
    if s in BINNINGS:
        return BINNING_DIR / f"{s}.xml"
    return Path(s)


def _floats(text: str, where: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise GeometryError(f"{where}: r_edges {text!r} is not a list of numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise GeometryError(f"{where}: r_edges {text!r} has non-finite values")
    if any(b <= a for a, b in itertools.pairwise(vals)):
        raise GeometryError(f"{where}: r_edges {text!r} must increase")
    return vals


def load_binning(name_or_path: str | Path, particle: str | None = None) -> Geometry:
    """Read a binning XML (a shipped name or a file); ``particle`` picks the ``<Bin name=..>``
    when the file holds several (default: the first).

    Raises :class:`GeometryError` naming the file for anything unreadable.
    """
    path = binning_path(name_or_path)
    if not path.exists():
        raise GeometryError(f"{path}: no such binning file (data.binning takes a file or one "
                            f"of {', '.join(BINNINGS)})")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise GeometryError(f"{path}: not a readable binning XML ({exc})") from None
    bins = [b for b in root.iter("Bin")]
    if particle is not None:
        bins = [b for b in bins if b.attrib.get("name") == particle]
    if not bins:
        what = f"<Bin name={particle!r}>" if particle else "<Bin> element"
        raise GeometryError(f"{path}: no {what}")
    b = bins[0]
    layers = []
    for el in b.iter("Layer"):
        where = f"{path} layer {el.attrib.get('id')}"
        try:
            lid = int(el.attrib["id"])
            n_alpha = int(el.attrib.get("n_bin_alpha", "1"))
        except (KeyError, ValueError):
            raise GeometryError(f"{where}: needs integer id and n_bin_alpha") from None
        edges = _floats(el.attrib.get("r_edges", "0"), where)
        if n_alpha < 1:
            raise GeometryError(f"{where}: n_bin_alpha must be >= 1, got {n_alpha}")
        if len(edges) > 1:
            layers.append(Layer(lid, edges, n_alpha))
    if not layers:
        raise GeometryError(f"{path}: no layer with voxels (every r_edges is \"0\")")
    try:
        pid = int(b.attrib.get("pid", "0"))
    except ValueError:
        pid = 0
    return Geometry(b.attrib.get("name", "unknown"), pid, tuple(layers), str(path))
