"""A gallery belongs to one face tier and one voice tier: its templates live in those tiers'
embedding spaces.

The student and dlib's face ResNet (face tier ``large``) both give 128-d unit vectors, the voice
student and Resemblyzer's GE2E encoder (voice tier ``large``) both 256-d ones, so a template of
one compared with a probe of the other gives a number, but a meaningless one. The gallery stores
the sha256 of the model behind each template; the models folder's manifest says which tier each
face and voice model belongs to. A gallery holding templates of the other tier is refused by
name, before any attempt is decided or anyone is enrolled into it (templates of an unknown model
stay the gallery's usual "re-enrol" case).
"""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.bundle import load_manifest
from edge_runtime.errors import GalleryError, ModelError
from edge_runtime.frontend.features import FACE_TTA, tta_digest
from edge_runtime.models import ModelBundle, face_tier_of, voice_tier_of
from edge_runtime.store.gallery import Gallery


def _known_hashes(bundle: ModelBundle, modality: str) -> dict[str, str]:
    """Template model hash -> tier for every ``modality`` model the bundle's manifest lists."""
    try:
        manifest = load_manifest(bundle.root)
    except ModelError:  # a bundle assembled in memory: only its own models are known
        manifest = {}
    tier_of: Callable[[str], str | None] = face_tier_of if modality == "face" else voice_tier_of
    if modality == "face":  # the face hash includes the test-time augmentation
        tiers = {tta_digest(e.sha256, tta): tier for name, e in manifest.items()
                 if (tier := tier_of(name)) is not None for tta in FACE_TTA}
    else:
        tiers = {e.sha256: tier for name, e in manifest.items()
                 if (tier := tier_of(name)) is not None}
    tiers[bundle.hashes[modality]] = bundle.face_tier if modality == "face" else bundle.voice_tier
    return tiers


def gallery_tiers(gallery: Gallery, bundle: ModelBundle, modality: str = "face"
                  ) -> dict[str, list[str]]:
    """Tier -> enrolled names, for the ``modality`` templates whose model the bundle's
    manifest knows (templates of unknown models are the gallery's usual "re-enrol" case)."""
    tiers = _known_hashes(bundle, modality)
    out: dict[str, list[str]] = {}
    for entry in gallery.list():
        tier = tiers.get(entry.model_sha256.get(modality, ""))
        if tier is not None:
            out.setdefault(tier, []).append(entry.name)
    return out


def check_gallery_tier(gallery: Gallery, bundle: ModelBundle) -> None:
    """Refuse (GalleryError naming the gallery and both tiers) a gallery enrolled with another
    face tier or another voice tier than ``bundle`` runs."""
    for modality, running in (("face", bundle.face_tier), ("voice", bundle.voice_tier)):
        other = {t: names for t, names in gallery_tiers(gallery, bundle, modality).items()
                 if t != running}
        if not other:
            continue
        tier, names = next(iter(other.items()))
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise GalleryError(
            f"gallery {gallery.path} was enrolled with {modality} tier {tier!r} ({len(names)} "
            f"identities: {shown}) but these models run {modality} tier {running!r}: their "
            f"embeddings are not comparable. Run with --{modality}-tier {tier}, or enrol into "
            f"another gallery with --{modality}-tier {running}")
