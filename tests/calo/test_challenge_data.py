"""CaloChallenge-format synthetic data, L-layer energy features, the challenge's features."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flowctl.calo.energy import decode_energies
from flowctl.calo.features import classifier_high, classifier_low, high_level_features
from flowctl.calo.geometry import load_binning
from flowctl.data.calo import (
    DataError,
    energies_from_features,
    energy_features,
    read_calochallenge,
)
from flowctl.data.synth.challenge import DS1_ENERGIES_MEV, generate, main, write


@pytest.mark.parametrize("name,n", [("ds1_photons", 40), ("ds1_pions", 40), ("ds2", 20),
                                    ("ds3", 4)])
def test_synth_writes_the_challenge_format(tmp_path: Path, name: str, n: int) -> None:
    g = load_binning(name)
    path = write(tmp_path / f"{name}.h5", name, n, seed=1)
    with h5py.File(path) as f:
        assert sorted(f.keys()) == ["incident_energies", "showers"]
        assert f["incident_energies"].shape == (n, 1)
        assert f["showers"].shape == (n, g.n_voxels)
        assert f["showers"].compression == "gzip"
        e, s = f["incident_energies"][:, 0], f["showers"][:]
    assert (s >= 0).all() and (s.sum(1) <= e * (1 + 1e-5)).all()  # MeV, no energy created
    if name.startswith("ds1"):
        assert np.isin(e, DS1_ENERGIES_MEV).all()
    else:
        assert (e >= 1e3).all() and (e <= 1e6).all()
    assert read_calochallenge(path, g.layer_sizes).voxels.shape == (n, g.n_voxels)


def test_synth_physics_and_cli(tmp_path: Path) -> None:
    g = load_binning("ds1_photons")
    _, s = generate(g, 400, seed=2)
    el = np.stack([s[:, sl].sum(1) for sl in g.layer_slices], 1)
    assert el[:, 2].mean() > el[:, 0].mean()  # the middle layer takes most of the shower
    assert 0.0 < (s == 0).mean() < 1.0  # sparse but not empty
    _, p = generate(load_binning("ds1_pions"), 400, seed=2)
    assert (p == 0).mean() > (s == 0).mean()  # pions are sparser
    assert main(["--dataset", "ds2", "--n", "3", "--out", str(tmp_path / "x.h5")]) == 0
    with h5py.File(tmp_path / "x.h5") as f:
        assert f["showers"].shape == (3, 6480)


def test_voxel_count_mismatch_names_both_files(tmp_path: Path) -> None:
    path = write(tmp_path / "p.h5", "ds1_photons", 5)
    pions = load_binning("ds1_pions")
    with pytest.raises(DataError, match=r"p.h5: 368 voxels per shower, but the binning .*"
                                        r"ds1_pions.xml has 533"):
        read_calochallenge(path, pions.layer_sizes, binning=pions.source)


def test_energy_features_any_number_of_layers() -> None:
    rng = np.random.default_rng(0)
    e_gev = rng.uniform(1, 100, 200)
    el = rng.exponential(1.0, (200, 7)) * 1000.0
    el[:5, 4:] = 0.0  # empty later layers
    el *= (0.9 * e_gev * 1000.0 / el.sum(1))[:, None]
    u = energy_features(el, e_gev, scale=1.5)
    assert u.shape == (200, 7) and (u >= 0).all() and (u <= 1).all()
    assert np.allclose(u[:, 0], 0.9 / 1.5)
    back = energies_from_features(u, e_gev, scale=1.5)
    assert np.allclose(back, el, rtol=1e-9, atol=1e-6)
    t = decode_energies(torch.from_numpy(u), torch.from_numpy(e_gev), 1.5).numpy()
    assert np.allclose(t, el, rtol=1e-9, atol=1e-6)


def test_high_level_features_by_hand() -> None:
    g = load_binning("ds1_photons")
    v = np.zeros((2, g.n_voxels))
    lay = g.layers[1]
    r, a = lay.centres()
    sl = g.layer_slices[1]
    # shower 0: two equal deposits at alpha bins 0 and 5 (opposite sides), r bin 3
    i0, i1 = 0 * lay.n_r + 3, 5 * lay.n_r + 3
    v[0, sl.start + i0] = v[0, sl.start + i1] = 10.0
    v[0, 0] = 0.5  # below the 1 MeV threshold: zeroed
    v[1, sl.start + i0] = 4.0
    f = high_level_features(g, np.array([100.0, 100.0]), v, min_energy_mev=1.0)
    assert np.allclose(f["E_1"], [20.0, 4.0]) and np.allclose(f["E_0"], 0.0)
    assert np.allclose(f["E_tot/E_inc"], [0.2, 0.04])
    x0 = r[i0] * np.cos(a[i0])
    assert np.allclose(f["EC_eta_1"], [0.0, x0], atol=1e-9)  # opposite points cancel
    assert np.allclose(f["width_eta_1"][0], abs(x0))
    assert np.allclose(f["EC_r_1"], r[i0]) and np.allclose(f["width_r_1"], 0.0, atol=1e-6)
    assert np.allclose(f["sparsity_1"], [1 - 2 / 160, 1 - 1 / 160])
    assert "EC_eta_0" not in f  # only alpha-binned layers have eta/phi
    hi = classifier_high(g, np.array([100.0, 100.0]), v, 1.0)
    assert hi.shape == (2, 1 + 5 + 4 * 2 + 1 + 3 * 5)
    lo = classifier_low(g, np.array([100.0, 100.0]), v, 1.0, normed=True)
    assert lo.shape == (2, 1 + 368 + 5) and np.allclose(lo[0, 1 + sl.start + i0], 0.5)


@pytest.mark.slow
def test_two_seeds_are_one_distribution() -> None:
    """The challenge's cls-high classifier cannot tell two synthetic files apart."""
    from flowctl.classifiers import ClassifierConfig, train_classifier

    g = load_binning("ds1_photons")
    xs = []
    for seed in (0, 1):
        e, s = generate(g, 1500, seed=seed)
        xs.append(classifier_high(g, e, s, 1.0))
    cfg = ClassifierConfig(hidden=(32, 32), epochs=15, patience=5, batch_size=256,
                           bootstrap=20, lr=1e-3)
    r = train_classifier(xs[0], xs[1], cfg)
    assert abs(r.auc - 0.5) < 0.06, r.auc
