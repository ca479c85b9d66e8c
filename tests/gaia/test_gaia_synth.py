"""Synthetic Gaia patch: a thin, cold stream with an isochrone-like CMD on a smooth field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowctl.data.gaia import fiducial_mask, load_patch, read_gaia
from flowctl.data.synth.gaia import (
    CENTER,
    STREAM_PM,
    generate,
    main,
    stream_color,
    stream_track,
)


@pytest.fixture(scope="module")
def patch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gaia")
    assert main(["--out", str(out), "--n-field", "20000", "--n-stream", "500", "--seed", "3"]) == 0
    return out / "patch.h5"


def test_file_is_a_gaia_table_with_truth(patch_file: Path) -> None:
    cols = read_gaia(patch_file, extra=["stream"])
    assert len(cols["ra"]) == 20500 and int(cols["stream"].sum()) == 500
    patch = load_patch(patch_file, CENTER, 15.0)
    assert len(patch) == 20500                      # every star lies in the 15 deg cap
    assert np.hypot(patch["phi"], patch["lam"]).max() < 15.5


def test_stream_is_thin_cold_and_on_an_isochrone(patch_file: Path) -> None:
    p = load_patch(patch_file, CENTER, 15.0)
    lab = p.labels
    assert lab is not None
    s, f = lab == 1, lab == 0
    off = p["lam"][s] - stream_track(p["phi"][s])
    assert np.std(off) < 0.35 and np.mean(np.abs(off) < 1.0) > 0.99
    assert np.ptp(p["phi"][s]) > 25                 # spans the patch
    # coherent proper motion: far narrower than the field, centred on STREAM_PM
    assert abs(np.median(p["pmphi"][s]) - STREAM_PM[0]) < 0.5
    assert abs(np.median(p["pmlam"][s]) - STREAM_PM[1]) < 0.5
    assert np.std(p["pmlam"][s]) < 0.25 * np.std(p["pmlam"][f])
    # colour follows the sequence; the field is spread over a much wider range
    dc = p["bp_rp"][s] - stream_color(p["g"][s])
    assert np.median(np.abs(dc)) < 0.06
    assert np.median(np.abs(p["bp_rp"][f] - stream_color(p["g"][f]))) > 0.15
    # most of the stream survives the fiducial cuts (cold, blue-ish, moving)
    assert np.mean(fiducial_mask(p)[s]) > 0.5


def test_field_is_smooth_on_the_sky(patch_file: Path) -> None:
    p = load_patch(patch_file, CENTER, 15.0)
    f = p.labels == 0
    inner = np.hypot(p["phi"][f], p["lam"][f]) < 10
    h, _, _ = np.histogram2d(p["phi"][f][inner], p["lam"][f][inner], bins=8,
                             range=[[-7, 7], [-7, 7]])
    # Poisson scatter only, plus the gentle gradient in λ: no cell is far off its row mean
    rows = h.mean(axis=0, keepdims=True)
    assert np.all(np.abs(h - rows) < 5 * np.sqrt(rows) + 5)


def test_seed_and_csv(tmp_path: Path) -> None:
    a, b = generate(300, 30, seed=1), generate(300, 30, seed=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(generate(300, 30, seed=2)["ra"], a["ra"])
    assert main(["--out", str(tmp_path), "--name", "p", "--format", "csv", "--n-field", "300",
                 "--n-stream", "30"]) == 0
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["source_id", "ra", "dec"] and header[-1] == "stream"
    assert len(load_patch(tmp_path / "p.csv")) == 330
