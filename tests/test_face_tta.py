"""Face test-time augmentation ("flip"): the embedding, its key, the operating-point file that
carries it, and a bundle and gallery that follow it.

The network here is the small test bundle's face model (a fixed random projection of pooled
pixels, not mirror-symmetric), on a real LFW fixture crop; no accuracy is claimed here
(benchmarks/face_tta.md measures that on held-out LFW).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from runtime_models import test_models  # noqa: F401 (pytest fixture)

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frontend.face import DlibHogDetector, choose_face, load_image
from edge_runtime.frontend.features import (
    STUDENT_FACE_INPUT,
    embed_face_tensor,
    tta_digest,
)
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import (
    Calibration,
    Fuser,
    OperatingPoints,
    SubsetFusion,
    load_operating_points,
    save_operating_points,
)
from edge_runtime.store.gallery import Gallery


@pytest.fixture(scope="module")
def crops(fixtures):
    out = []
    for name in ("Tony_Blair/Tony_Blair_0001.jpg", "Tony_Blair/Tony_Blair_0002.jpg"):
        image = load_image(fixtures / "lfw" / name)
        out.append(STUDENT_FACE_INPUT.crop(image, choose_face(DlibHogDetector().detect(image),
                                                              image.shape)))
    return out


def _net(seed: int = 0):
    """A linear 'network' that is NOT mirror-symmetric: (N, 3, H, W) -> (N, 16)."""
    w = np.random.default_rng(seed).standard_normal((3 * 8 * 8, 16)).astype(np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        n, c, h, ww = x.shape
        pooled = x.reshape(n, c, 8, h // 8, 8, ww // 8).mean(axis=(3, 5))
        return pooled.reshape(n, -1) @ w
    return run


def test_flip_is_the_mean_of_a_face_and_its_mirror(crops):
    run = _net()
    x = STUDENT_FACE_INPUT.tensor(crops)
    plain = embed_face_tensor(run, x)
    mirror = embed_face_tensor(run, np.ascontiguousarray(x[..., ::-1]))
    flip = embed_face_tensor(run, x, "flip")
    expected = plain + mirror
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flip, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(flip, axis=1), 1.0, atol=1e-6)
    # the point of it: a face and its mirror image get the same embedding, which the plain
    # network does not give them
    assert float(np.min(np.sum(plain * mirror, axis=1))) < 0.999
    flip_of_mirror = embed_face_tensor(run, np.ascontiguousarray(x[..., ::-1]), "flip")
    np.testing.assert_allclose(flip_of_mirror, flip, atol=1e-6)
    with pytest.raises(ModelError, match="must be one of"):
        embed_face_tensor(run, x, "jitter")


def test_digest_keys_the_embedding_function():
    sha = "ab" * 32
    assert tta_digest(sha, "none") == sha
    flip = tta_digest(sha, "flip")
    assert flip != sha and len(flip) == 64 and int(flip, 16) >= 0
    assert tta_digest("cd" * 32, "flip") != flip


def _op(manifest: dict, face_tta: str = "none") -> OperatingPoints:
    fuser = Fuser({"face": Calibration(1, 0), "voice": Calibration(1, 0)},
                  {frozenset({"face", "voice"}): SubsetFusion({"face": 1, "voice": 1}, 0)})
    return OperatingPoints({m: manifest[m]["sha256"] for m in ("face", "voice")}, "2" * 64,
                           fuser, (), face_tta=face_tta)


def test_operating_point_file_carries_it(tmp_path):
    manifest = {"face": {"sha256": "1" * 64}, "voice": {"sha256": "2" * 64}}
    hashes = {"face": "1" * 64, "voice": "2" * 64}
    plain = save_operating_points(_op(manifest), tmp_path / "plain.yaml")
    assert "face_tta" not in plain.read_text()  # files without it are written as before
    assert load_operating_points(plain, hashes).face_tta == "none"
    flip = save_operating_points(_op(manifest, "flip"), tmp_path / "flip.yaml")
    assert load_operating_points(flip, hashes).face_tta == "flip"
    # edited by hand: refused by the checksum; a bad value with a valid checksum: by name
    flip.write_text(flip.read_text().replace("face_tta: flip", "face_tta: none"))
    with pytest.raises(ConfigError, match="checksum mismatch"):
        load_operating_points(flip, hashes)
    bad = save_operating_points(dataclasses.replace(_op(manifest), face_tta="jitter"),
                                tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="face_tta 'jitter'"):
        load_operating_points(bad, hashes)


def test_bundle_embeds_and_keys_templates_as_its_file_says(test_models, tmp_path, crops):  # noqa: F811
    models = tmp_path / "models"
    shutil.copytree(test_models, models)
    manifest = json.loads((models / "manifest.json").read_text())["models"]
    save_operating_points(_op(manifest, "flip"), models / "operating_points.yaml")
    with ModelBundle.load(models) as bundle:
        assert bundle.face_tta == "flip"
        assert bundle.hashes["face"] == tta_digest(manifest["face"]["sha256"], "flip")
        assert bundle.hashes["voice"] == manifest["voice"]["sha256"]
        flip = bundle.embed_faces(crops)
        bundle.use_face_tta("none")
        plain = bundle.embed_faces(crops)
        assert bundle.hashes["face"] == manifest["face"]["sha256"]
        mirrored = bundle.embed_faces([np.ascontiguousarray(c[:, ::-1]) for c in crops])
        with pytest.raises(ConfigError, match="must be one of"):
            bundle.use_face_tta("jitter")
    expected = plain + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flip, expected, atol=1e-5)

    # a gallery enrolled without it is stale for a bundle that flips (re-enrol), not mixed
    gallery_path, key = tmp_path / "g.db", os.urandom(32)
    with Gallery.open(gallery_path, key) as g:
        g.enroll("blair", {"face": plain[0]}, {"face": 1}, {"face": manifest["face"]["sha256"]})
        names, _ = g.templates("face", tta_digest(manifest["face"]["sha256"], "flip"),
                               skip_stale=True)
        assert names == []
        names, _ = g.templates("face", manifest["face"]["sha256"], skip_stale=True)
        assert names == ["blair"]
