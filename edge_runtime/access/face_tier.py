"""A gallery belongs to one face tier: its face templates live in that tier's embedding space.

The student and dlib's face ResNet (tier ``large``) both give 128-d unit vectors, so a
template of one compared with a probe of the other gives a number, but a meaningless one. The
gallery stores the sha256 of the model behind each template; the models folder's manifest says
which tier each face model belongs to. A gallery holding face templates of the other tier is
refused by name, before any attempt is decided or anyone is enrolled into it.
"""

from __future__ import annotations

from edge_runtime.bundle import load_manifest
from edge_runtime.errors import GalleryError, ModelError
from edge_runtime.frontend.features import FACE_TTA, tta_digest
from edge_runtime.models import ModelBundle, face_tier_of
from edge_runtime.store.gallery import Gallery


def gallery_tiers(gallery: Gallery, bundle: ModelBundle) -> dict[str, list[str]]:
    """Face tier -> enrolled names, for the face templates whose model the bundle's manifest
    knows (templates of unknown models are the gallery's usual "re-enrol" case)."""
    try:
        manifest = load_manifest(bundle.root)
    except ModelError:  # a bundle assembled in memory: only its own face model is known
        manifest = {}
    tiers = {tta_digest(e.sha256, tta): tier for name, e in manifest.items()
             if (tier := face_tier_of(name)) is not None for tta in FACE_TTA}
    tiers[bundle.hashes["face"]] = bundle.face_tier
    out: dict[str, list[str]] = {}
    for entry in gallery.list():
        tier = tiers.get(entry.model_sha256.get("face", ""))
        if tier is not None:
            out.setdefault(tier, []).append(entry.name)
    return out


def check_gallery_tier(gallery: Gallery, bundle: ModelBundle) -> None:
    """Refuse (GalleryError naming the gallery and both tiers) a gallery enrolled with the
    other face tier than ``bundle`` runs."""
    other = {t: names for t, names in gallery_tiers(gallery, bundle).items()
             if t != bundle.face_tier}
    if not other:
        return
    tier, names = next(iter(other.items()))
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise GalleryError(
        f"gallery {gallery.path} was enrolled with face tier {tier!r} ({len(names)} "
        f"identities: {shown}) but these models run face tier {bundle.face_tier!r}: their "
        "embeddings are not comparable. Run with --face-tier "
        f"{tier}, or enrol into another gallery with --face-tier {bundle.face_tier}")
