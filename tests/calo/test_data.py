"""CaloGAN / CaloChallenge readers, the synthetic calorimeter and CaloFlow's features."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.data.calo import (
    CALOGAN_LAYERS,
    DataError,
    add_noise,
    energies_from_features,
    energy_features,
    read_calochallenge,
    read_calogan,
    read_showers,
    split_showers,
    voxel_features,
    voxels_from_features,
    write_calogan,
)
from flowctl.data.synth import generate


@pytest.fixture(scope="module")
def showers():
    return generate("eplus", 300, seed=3)


def _write(path: Path, **arrays: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def _good(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    d = {"energy": rng.uniform(1, 100, (n, 1))}
    for i, shp in enumerate(CALOGAN_LAYERS):
        d[f"layer_{i}"] = rng.exponential(1.0, (n, *shp)).astype(np.float32)
    d["overflow"] = np.zeros((n, 3))
    return d


def test_round_trip(tmp_path: Path, showers) -> None:
    path = write_calogan(tmp_path / "s.h5", showers, dtype="float64")
    back = read_calogan(path)
    assert np.allclose(back.energy, showers.energy)
    assert np.allclose(back.voxels, showers.voxels)
    assert np.allclose(back.overflow, showers.overflow)
    with h5py.File(path) as f:  # exactly the CaloGAN layout
        assert f["energy"].shape == (300, 1)
        assert [f[f"layer_{i}"].shape[1:] for i in range(3)] == list(CALOGAN_LAYERS)
        assert f["overflow"].shape == (300, 3)
    assert read_showers(path).voxels.shape == (300, 504)


def test_dtype_read_from_file(tmp_path: Path) -> None:
    s = read_calogan(_write(tmp_path / "a.h5", **_good()))
    assert s.voxels.dtype == np.float32


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("layer_1"), "missing key 'layer_1'"),
    (lambda d: d.update(layer_2=np.zeros((5, 6, 12))), r"'layer_2' has shape \[5, 6, 12\]"),
    (lambda d: d["layer_0"].__setitem__((2, 0, 0), -1.0), "'layer_0' has 1 negative"),
    (lambda d: d["layer_1"].__setitem__((1, 0, 0), np.nan), "'layer_1' has 1 non-finite"),
    (lambda d: d.update(energy=np.zeros((5, 1))), "'energy' has 5 incident energies <= 0"),
    (lambda d: d.update(layer_0=np.zeros((4, 3, 96))), "'layer_0' has 4 rows"),
])
def test_reader_errors_name_file_and_key(tmp_path: Path, mutate, match: str) -> None:
    d = _good()
    mutate(d)
    path = _write(tmp_path / "bad.h5", **d)
    with pytest.raises(DataError, match=match) as err:
        read_calogan(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty file"):
        read_calogan(_write(tmp_path / "e.h5"))
    with pytest.raises(DataError, match="is empty"):
        d = {k: v[:0] for k, v in _good().items()}
        read_calogan(_write(tmp_path / "z.h5", **d))
    with pytest.raises(DataError, match="no such file"):
        read_calogan(tmp_path / "nope.h5")
    (tmp_path / "t.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="cannot open as HDF5"):
        read_calogan(tmp_path / "t.h5")


def test_calochallenge(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = _write(tmp_path / "cc.h5", incident_energies=rng.uniform(256, 4e6, (7, 1)),
                  showers=rng.exponential(1.0, (7, 368)))
    s = read_calochallenge(path, [8, 160, 190, 5, 5])
    assert s.voxels.shape == (7, 368) and len(s.layer_slices) == 5
    assert s.energy.max() < 4.2e3  # MeV -> GeV
    assert read_showers(path).voxels.shape == (7, 368)
    with pytest.raises(DataError, match="sums to 300"):
        read_calochallenge(path, [100, 200])
    with pytest.raises(DataError, match="missing key 'showers'"):
        read_calochallenge(_write(tmp_path / "c2.h5", incident_energies=np.ones((3, 1))))


def test_split_is_70_30_and_disjoint(showers) -> None:
    tr, te = split_showers(showers, (0.7, 0.3), seed=0)
    assert (len(tr), len(te)) == (210, 90)
    both = np.concatenate([tr.energy, te.energy])
    assert np.allclose(np.sort(both), np.sort(showers.energy))


def test_generator_physics(showers) -> None:
    pi = generate("piplus", 300, seed=3)
    ga = generate("gamma", 300, seed=3)
    for s in (showers, pi, ga):
        assert s.voxels.shape == (300, 504) and (s.voxels >= 0).all()
        assert (s.energy >= 1).all() and (s.energy <= 100).all()
        tot = s.voxels.sum(1) + s.overflow.sum(1)
        assert (tot <= s.energy * 1000 * (1 + 1e-9)).all()
    occ = lambda s: (s.voxels > 0).mean()
    assert occ(pi) < occ(showers)  # pions are sparser
    assert (pi.voxels.sum(1) / (pi.energy * 1000)).mean() < 0.5  # and deposit far less
    e0 = lambda s: (s.layer_energies()[:, 0] / s.voxels.sum(1)).mean()
    assert e0(ga) < e0(showers)  # photons convert later
    assert not np.allclose(generate("eplus", 50, seed=4).voxels, showers.voxels[:50])


def test_energy_features_invert(showers) -> None:
    e = showers.layer_energies()
    u = energy_features(e, showers.energy)
    assert (u >= 0).all() and (u <= 1).all()
    assert np.allclose(energies_from_features(u, showers.energy), e, rtol=1e-9, atol=1e-6)


def test_voxel_features_invert(showers) -> None:
    rng = np.random.default_rng(0)
    v = add_noise(showers.voxels, rng)
    x = voxel_features(v, showers.layer_slices)
    for sl in showers.layer_slices:
        assert np.allclose(x[:, sl].sum(1), 1.0)
    e = np.stack([v[:, sl].sum(1) for sl in showers.layer_slices], 1)
    back = voxels_from_features(x, e, showers.layer_slices, threshold_mev=0.0)
    assert np.allclose(back, v, rtol=1e-9, atol=1e-9)
    # with the noise-level threshold, the truth's empty voxels come back empty
    back = voxels_from_features(x, e, showers.layer_slices)
    assert ((back > 0) == (showers.voxels > 0)).mean() > 0.999


def test_logit_preprocessing_invertible() -> None:
    import torch

    from flowctl.flows import Logit

    x = torch.rand(64, 504, dtype=torch.float64) ** 8
    t = Logit(1e-6)
    z, ld = t(x)
    back, ld_inv = t.inverse(z)
    assert torch.allclose(back, x, atol=1e-12)
    assert torch.allclose(ld, -ld_inv)
