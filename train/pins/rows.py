"""Raw rows of the paper-scale path: aligned face crops and voice sources, with identity roles.

One builder per data layout, all returning `Rows` (no embedding yet), so that full-mode
training, its stage-2 FAA fit and `edgepin eval crossmodal` read the very same rows:
- `voxceleb1`: VoxCeleb1 audio + face frames (`train.datasets.voxceleb.VoxCeleb1`);
- `voxceleb2`: VoxCeleb2 aac/m4a audio + mp4 face tracks (`VoxCeleb2`);
- `clips`: any folder of talking-face clips (`ClipFolder`: GRID, VoxCeleb2 mp4 only, a site's);
- `pairing`: a face folder and a voice folder joined by a pairing file (face name, voice name).
A row's `group` is its video (clip); its `identity` the person. Roles (train / val / seen /
unseen) come from ONE identity split over the dataset's identity list, shared by both
modalities; seen-heard rows are whole held-out videos of training people.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, DatasetError, MediaError
from train.datasets.voxceleb import identity_roles
from train.pins.data import CrossModalSet, ModalTable, heldout_mask

log = logging.getLogger(__name__)
SOURCES = ("voxceleb1", "voxceleb2", "clips", "pairing")


@dataclass
class Rows:
    """Face crops (F, 112, 112) grey uint8 and voice sources (path or waveform), labelled."""

    crops: np.ndarray
    face_group: np.ndarray
    face_identity: np.ndarray
    face_source: list[str]
    voices: list[Any]
    voice_group: np.ndarray
    voice_identity: np.ndarray
    voice_source: list[str]
    universe: list[str]  # the identity list the split is defined on
    genders: dict[str, str] = field(default_factory=dict)

    def identities_with_both(self) -> list[str]:
        return sorted(set(self.face_identity.tolist()) & set(self.voice_identity.tolist()))


def _obj(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


class _Builder:
    """Accumulates rows; faces from image files (cached alignment) or from decoded frames."""

    def __init__(self, cache_dir: Path | None, workers: int) -> None:
        self.cache_dir, self.workers = cache_dir, workers
        self.crops: list[np.ndarray] = []
        self.f: list[tuple[str, str, str]] = []  # (group, identity, source)
        self.voices: list[Any] = []
        self.v: list[tuple[str, str, str]] = []
        self._detector: Any = None

    def face_files(self, samples: Sequence[Any], group_of: Any) -> None:
        from train.prepare import prepare_faces

        if not samples:
            return
        if self.cache_dir is None:
            raise ConfigError("face image files need a crop cache folder (--cache)")
        prepared = prepare_faces(list(samples), self.cache_dir, with_teacher=False,
                                 workers=self.workers)
        for s, crop in zip(prepared.samples, prepared.crops, strict=True):
            self.crops.append(crop)
            self.f.append((group_of(s), s.identity, str(s.path)))

    def track(self, path: Path, group: str, identity: str, step: int, max_frames: int,
              audio: bool) -> np.ndarray | None:
        """Faces of every `step`-th frame of a clip (aligned crops cached by file sha256 in
        the cache folder when there is one); returns the clip's audio when `audio`."""
        from edge_runtime.frontend.video import decode_clip
        from train.cache import ArrayCache
        from train.datasets import file_sha256
        from train.prepare import FACE_PREP_VERSION

        cache = ArrayCache(self.cache_dir / "pins_tracks.sqlite") if self.cache_dir else None
        key = ArrayCache.key(file_sha256(path), "pins-track",
                             f"{FACE_PREP_VERSION}|step{step}|max{max_frames}|audio{audio}")
        try:
            got = cache.get(key) if cache else None
            if got is None:
                clip = decode_clip(path, require_audio=audio, max_frames=max_frames)
                crops, times = self._align(clip, step)
                got = {"crops": crops, "t": times}
                if audio:
                    from edge_runtime.frontend.audio import resample

                    got["audio"] = resample(clip.audio, clip.sample_rate, 16000)
                if cache:
                    cache.put_many([(key, got)])
        finally:
            if cache:
                cache.close()
        for crop, t in zip(got["crops"], got["t"], strict=True):
            self.crops.append(crop)
            self.f.append((group, identity, f"{path}@{t:.2f}"))
        return got.get("audio")

    def _align(self, clip: Any, step: int) -> tuple[np.ndarray, np.ndarray]:
        from edge_runtime.frontend.face import DlibHogDetector, detect_and_align
        from edge_runtime.frontend.features import face_grey

        if self._detector is None:
            self._detector = DlibHogDetector()
        crops, times = [], []
        for frame in clip.frames[::step]:
            try:
                aligned, _ = detect_and_align(frame.image, self._detector,
                                              source=f"{clip.path}@{frame.t:.2f}")
            except MediaError:
                continue
            crops.append(face_grey(aligned))
            times.append(frame.t)
        return (np.stack(crops) if crops else np.zeros((0, 112, 112), np.uint8),
                np.asarray(times, np.float64))

    def voice(self, src: Any, group: str, identity: str, name: str) -> None:
        self.voices.append(src)
        self.v.append((group, identity, name))

    def audio(self, wav: np.ndarray, sr: int, group: str, identity: str, name: str,
              segment_s: float) -> None:
        """A clip's audio as one voice row, or as round(duration / `segment_s`) equal pieces."""
        k = max(1, int(round(len(wav) / (segment_s * sr)))) if segment_s > 0 else 1
        for a, piece in zip(np.linspace(0, len(wav), k + 1)[:-1].astype(int),
                            np.array_split(wav, k), strict=True):
            self.voice(piece, group, identity, f"{name}@{a / sr:.2f}")

    def done(self, universe: Sequence[str], genders: dict[str, str], what: str) -> Rows:
        if not self.crops:
            raise DatasetError(f"{what}: no face found in any frame or image")
        if not self.voices:
            raise DatasetError(f"{what}: no voice")
        fg, fi, fs = zip(*self.f, strict=True)
        vg, vi, vs = zip(*self.v, strict=True)
        return Rows(np.stack(self.crops), _obj(fg), _obj(fi), list(fs), self.voices, _obj(vg),
                    _obj(vi), list(vs), sorted(set(universe)), genders)


def _path(root: Path, rel: str | None, default: str) -> Path:
    p = Path(rel or default)
    return p if p.is_absolute() else root / p


def voxceleb1_rows(root: Path, dcfg: dict, cache_dir: Path | None) -> Rows:
    """VoxCeleb1 audio + face frames (`frames_per_video` frames per video)."""
    from train.datasets.voxceleb import VoxCeleb1

    vox = VoxCeleb1(root, _path(root, dcfg.get("meta_csv"), "vox1_meta.csv"),
                    _path(root, dcfg.get("faces"), "faces"))
    per: dict[tuple[str, str], list] = {}
    for s in vox.face_samples:
        per.setdefault((s.identity, s.group or ""), []).append(s)
    k = int(dcfg.get("frames_per_video", 5))
    picked = [s for v in per.values() for s in v[:: max(1, len(v) // k)][:k]]
    b = _Builder(cache_dir, int(dcfg.get("workers", 2)))
    b.face_files(picked, lambda s: f"{s.identity}/{s.group}")
    for s in vox.voice_samples:
        b.voice(s.path, f"{s.identity}/{s.group}", s.identity, str(s.path))
    return b.done(vox.identity_universe(), vox.genders(), f"VoxCeleb1 {root}")


def voxceleb2_rows(root: Path, dcfg: dict, cache_dir: Path | None) -> Rows:
    """VoxCeleb2 m4a utterances + frames of the mp4 face tracks (`tracks_per_video` each)."""
    from train.datasets.voxceleb import VoxCeleb2

    vox = VoxCeleb2(root, _path(root, dcfg["meta_csv"], "") if dcfg.get("meta_csv") else None)
    b = _Builder(cache_dir, 1)
    step, max_frames = int(dcfg.get("frame_step", 5)), int(dcfg.get("max_frames", 250))
    per_video = int(dcfg.get("tracks_per_video", 1))
    taken: dict[tuple[str, str], int] = {}
    no_audio = {(s.identity, s.group) for s in vox.voice_from_video}
    for s in vox.face_samples:
        key = (s.identity, s.group or "")
        if taken.get(key, 0) >= per_video:
            continue
        taken[key] = taken.get(key, 0) + 1
        group = f"{s.identity}/{s.group}"
        try:
            wav = b.track(s.path, group, s.identity, step, max_frames, key in no_audio)
        except MediaError as exc:
            log.warning("%s: skipped (%s)", s.path, exc)
            continue
        if wav is not None:
            b.voice(wav, group, s.identity, str(s.path))
    for s in vox.voice_samples:
        b.voice(s.path, f"{s.identity}/{s.group}", s.identity, str(s.path))
    return b.done(vox.identity_universe(), vox.genders(), f"VoxCeleb2 {root}")


def clip_rows(root: Path, dcfg: dict, cache_dir: Path | None) -> Rows:
    """Talking-face clips: every `frame_step`-th frame and the clip's audio (whole, or in
    `voice_segment_s` pieces)."""
    from train.datasets import ClipFolder

    reader = ClipFolder(root)
    b = _Builder(cache_dir, 1)
    step, seg = int(dcfg.get("frame_step", 5)), float(dcfg.get("voice_segment_s", 0.0))
    for s in reader.samples:
        group = str(s.path.relative_to(reader.root))
        try:
            wav = b.track(s.path, group, s.identity, step, int(dcfg.get("max_frames", 250)),
                          True)
        except MediaError as exc:
            log.warning("%s: skipped (%s)", s.path, exc)
            continue
        assert wav is not None
        b.audio(wav, 16000, group, s.identity, str(s.path), seg)
    return b.done(reader.identities(), {}, f"clip folder {root}")


def read_pairing(path: Path) -> dict[str, str]:
    """{voice identity: face identity} from a two-column TSV with header `face<TAB>voice`."""
    from train.datasets import read_labels_tsv

    face_of = read_labels_tsv(path, "voice", "face")
    if len(set(face_of.values())) != len(face_of):
        raise DatasetError(f"{path}: a face identity is paired with two voices")
    return face_of


def pairing_rows(root: Path, dcfg: dict, cache_dir: Path | None) -> Rows:
    """A face folder and a voice folder of the same people, joined by a pairing file.

    Identity = the face folder name; voice folders not in the file are left out (logged)."""
    from train.datasets import FaceFolder, SpeechFolder

    faces = FaceFolder(_path(root, dcfg.get("faces"), "faces"))
    voices = SpeechFolder(_path(root, dcfg.get("voices"), "voices"))
    face_of = read_pairing(_path(root, dcfg.get("pairing"), "pairs.tsv"))
    b = _Builder(cache_dir, int(dcfg.get("workers", 1)))
    paired = set(face_of.values())
    b.face_files([s for s in faces.samples if s.identity in paired],
                 lambda s: f"{s.identity}/{s.group or 'img'}")
    dropped = set()
    for s in voices.samples:
        if s.identity not in face_of:
            dropped.add(s.identity)
            continue
        b.voice(s.path, f"{face_of[s.identity]}/{s.group or 'utt'}", face_of[s.identity],
                str(s.path))
    if dropped:
        log.warning("%d voice identities have no pairing row: %s", len(dropped), sorted(dropped))
    return b.done(sorted(paired), {}, f"pairing {root}")


def build_rows(data_root: str | Path, dcfg: dict, cache_dir: str | Path | None) -> Rows:
    """Rows of the configured source (`data.source`, paths relative to `data.root`)."""
    root = Path(data_root) / dcfg.get("root", ".")
    src = dcfg.get("source")
    cache = Path(cache_dir) if cache_dir is not None else None
    if src == "voxceleb1":
        return voxceleb1_rows(root, dcfg, cache)
    if src == "voxceleb2":
        return voxceleb2_rows(root, dcfg, cache)
    if src == "clips":
        return clip_rows(root, dcfg, cache)
    if src == "pairing":
        return pairing_rows(root, dcfg, cache)
    raise ConfigError(f"data.source must be one of {SOURCES}, got {src!r}")


def assign_roles(rows: Rows, scfg: dict | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(face roles, voice roles, description): ONE identity split for both modalities; of
    each training person, `seen_heldout_fraction` of the videos -> seen-heard. `scfg` None
    makes everyone unseen-unheard (a folder never trained on: `--split all`)."""
    if scfg is None:
        return (np.full(len(rows.face_group), "unseen", dtype=object),
                np.full(len(rows.voice_group), "unseen", dtype=object),
                {"unseen-unheard": f"all {len(rows.identities_with_both())} people with a face "
                                   "and a voice (--split all: none of them trained on)"})
    roles = identity_roles(rows.universe, int(scfg["n_train"]), int(scfg["n_val"]),
                           int(scfg["n_test"]), int(scfg["seed"]))
    missing = sorted(set(rows.face_identity.tolist()) | set(rows.voice_identity.tolist()))
    missing = [i for i in missing if i not in roles]
    if missing:
        raise DatasetError(f"identities {missing[:5]} have files but are not in the identity "
                           "list the split is defined on")
    uniq = sorted(set(zip(rows.face_identity.tolist(), rows.face_group.tolist(), strict=True))
                  | set(zip(rows.voice_identity.tolist(), rows.voice_group.tolist(),
                            strict=True)))
    held = heldout_mask([g for _, g in uniq], [i for i, _ in uniq],
                        float(scfg["seen_heldout_fraction"]), int(scfg["seed"]))
    held_groups = {g for (_, g), h in zip(uniq, held, strict=True) if h}

    def role(ident: str, group: str) -> str:
        r = roles[ident]
        return "seen" if r == "train" and group in held_groups else r

    fr = _obj([role(i, g) for i, g in zip(rows.face_identity, rows.face_group, strict=True)])
    vr = _obj([role(i, g) for i, g in zip(rows.voice_identity, rows.voice_group, strict=True)])
    both = set(rows.identities_with_both())
    n = {r: sum(1 for i, v in roles.items() if v == r and i in both)
         for r in ("train", "val", "unseen")}
    desc = {
        "identity split": f"{scfg['n_train']}/{scfg['n_val']}/{scfg['n_test']} train/val/unseen "
                          f"of {len(roles)} listed identities (sha256 rank, seed {scfg['seed']}, "
                          "scaled when fewer); with both modalities here: "
                          f"{n['train']}/{n['val']}/{n['unseen']}",
        "seen-heard": f"{scfg['seen_heldout_fraction']:.0%} of each training person's videos, "
                      "held out whole (no frame or utterance of them trained on)",
        "unseen-unheard": f"{n['unseen']} people never trained on",
        "validation": f"{n['val']} people, checkpoint selection only",
    }
    return fr, vr, desc


def wave(src: Any) -> np.ndarray:
    """A voice row's waveform (16 kHz mono): decoded from its file, or already in memory."""
    if isinstance(src, np.ndarray):
        return src
    from edge_runtime.frontend.audio import load_audio

    return load_audio(src)


def embed_rows(rows: Rows, face_role: np.ndarray, voice_role: np.ndarray, students: Any,
               threads: int = 2, splits: dict | None = None) -> CrossModalSet:
    """Rows embedded by ONNX students (`students.face` / `.voice`): what `eval crossmodal`
    and full mode's stage-2 fit both see (utterance = mean of its 2 s windows)."""
    from train.evaluate import load_embedder

    fem = load_embedder(str(students.face), "face", threads)
    vem = load_embedder(str(students.voice), "voice", threads)
    femb = fem.embed(list(rows.crops))
    vemb = np.concatenate([vem.embed([wave(s) for s in rows.voices[a:a + 64]])
                           for a in range(0, len(rows.voices), 64)])
    nf, nv = len(rows.face_group), len(rows.voice_group)
    return CrossModalSet(
        ModalTable(femb, rows.face_group, rows.face_identity, ["real"] * nf, face_role,
                   rows.face_source),
        ModalTable(vemb, rows.voice_group, rows.voice_identity, ["real"] * nv, voice_role,
                   rows.voice_source), splits or {})
