"""CaloChallenge binning XML: the shipped binnings, voxel order, bin centres, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from flowctl.calo.geometry import BINNINGS, GeometryError, binning_path, load_binning

EXPECTED = {"ds1_photons": (368, [0, 1, 2, 3, 12], "photon"),
            "ds1_pions": (533, [0, 1, 2, 3, 12, 13, 14], "pion"),
            "ds2": (6480, list(range(45)), "electron"),
            "ds3": (40500, list(range(45)), "electron")}


@pytest.mark.parametrize("name", BINNINGS)
def test_shipped_binnings(name: str) -> None:
    g = load_binning(name)
    n, ids, particle = EXPECTED[name]
    assert (g.n_voxels, g.layer_ids, g.particle) == (n, ids, particle)
    assert binning_path(name).is_file()  # shipped as package data
    assert g.layer_slices[-1].stop == n


def test_layer_sizes_and_voxel_order() -> None:
    g = load_binning("ds1_photons")
    assert g.layer_sizes == [8, 160, 190, 5, 5]
    lay = g.layers[1]  # 16 r bins x 10 alpha bins, alpha-major
    r, a = lay.centres()
    assert np.allclose(r[:16], r[16:32])  # every alpha bin repeats all r bins
    assert np.all(a[:16] == a[0]) and a[16] > a[0]
    assert math.isclose(a[0], -math.pi + math.pi / 10)  # bins split [-pi, pi) evenly
    assert math.isclose(r[0], 1.0) and math.isclose(r[15], 175.0)
    x, y, rr, _ = g.centres()
    assert np.allclose(np.hypot(x, y), rr)
    assert np.allclose(y[:8], 0.0)  # one alpha bin: centre alpha = 0 (the challenge's)


def test_custom_file_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "b.xml"
    p.write_text('<Bins><Bin pid="11" name="electron">'
                 '<Layer id="0" r_edges="0,1,2" n_bin_alpha="3"/>'
                 '<Layer id="1" r_edges="0" n_bin_alpha="1"/>'
                 '<Layer id="2" r_edges="0,5" n_bin_alpha="1"/></Bin></Bins>')
    g = load_binning(p)
    assert g.layer_ids == [0, 2] and g.n_voxels == 7 and g.dataset == "custom"
    with pytest.raises(GeometryError, match="no such binning file"):
        load_binning(tmp_path / "missing.xml")
    (tmp_path / "bad.xml").write_text("<Bins><Bin")
    with pytest.raises(GeometryError, match="not a readable binning XML"):
        load_binning(tmp_path / "bad.xml")
    (tmp_path / "dec.xml").write_text('<Bins><Bin name="e"><Layer id="0" r_edges="0,2,1" '
                                      'n_bin_alpha="1"/></Bin></Bins>')
    with pytest.raises(GeometryError, match="must increase"):
        load_binning(tmp_path / "dec.xml")
