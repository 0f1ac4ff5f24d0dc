"""VoxCeleb1 and VoxCeleb2 as released: the public sets with the same people's voices AND faces.

VoxCeleb1 (`VoxCeleb1`):
  Audio:  `root/wav/idXXXXX/<video>/NNNNN.wav` (the zip as released: `vox1_dev_wav.zip` and
          `vox1_test_wav.zip` both unpack to `wav/`).
  Faces:  `faces_root/<folder>/<video>/.../<frame>.jpg` where `<folder>` is the VGGFace1 name of
          the metadata (`unzippedFaces/A.J._Buckley/...`) or the idXXXXX id itself, and an
          optional crop-scale level (`1.6/`) sits between the person and the video. Below the
          video, frames are found at ANY depth (per-utterance folders of some preprocessings,
          `aligned/`, ...): every .jpg/.jpeg/.png under a video belongs to that video.
  Join:   `vox1_meta.csv`, tab-separated despite its name, header
          `VoxCeleb1 ID  VGGFace1 ID  Gender  Nationality  Set`.
VoxCeleb2 (`VoxCeleb2`):
  Audio:  `root/[dev|test/]aac/idXXXXX/<video>/NNNNN.m4a` (as released), or `wav/...` after a
          conversion; where a video has no audio file its `.mp4` carries the sound.
  Faces:  `root/[dev|test/]mp4/idXXXXX/<video>/NNNNN.mp4`: face tracks (cropped talking-face
          videos); frames are decoded from them (samples of modality "clip").
  Meta:   optional `vox2_meta.csv` (`VoxCeleb2 ID, VGGFace2 ID, Gender, Set`, comma- or
          tab-separated, fields padded with spaces as released) for gender and the official set.
Both modalities are keyed by the idXXXXX id, so a face and a voice sample with equal identity
really are the same person (unlike any LFW x speechocean762 pairing); `group` is the video.
Splits are defined ONCE per identity for both modalities (`identity_roles`): an identity
without faces keeps the role it would have with them.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import DatasetError
from train.datasets.core import Reader, Sample, decode_sample, has_ext, list_dir, require_dir
from train.datasets.labels import read_tsv

META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
VOX2_COLUMNS = ("VoxCeleb2 ID", "VGGFace2 ID", "Gender", "Set")
FACE_SCALE_DIR = "1.6"  # the frames' crop-scale folder in the official face release
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
VOX2_AUDIO = (("aac", (".m4a", ".aac")), ("wav", (".wav",)))
VOX2_VIDEO_EXTS = (".mp4",)
ROLES = ("train", "val", "unseen")


@dataclass(frozen=True)
class VoxIdentity:
    """One metadata row. `gender` is normalised to "M"/"F" like the other label files."""

    vox_id: str
    name: str
    gender: str
    nationality: str
    set: str


def read_vox1_meta(path: str | Path) -> dict[str, VoxIdentity]:
    """Parse vox1_meta.csv into {idXXXXX: VoxIdentity}; DatasetError naming the file if bad."""
    path = Path(path)
    header, rows = read_tsv(path)
    missing = [c for c in META_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; header is {header}")
    return _meta_rows(path, header, rows, META_COLUMNS)


def read_vox2_meta(path: str | Path) -> dict[str, VoxIdentity]:
    """Parse vox2_meta.csv (comma- or tab-separated, space-padded fields, as released)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read VoxCeleb2 metadata {path}: {exc}") from None
    delim = "\t" if "\t" in text.splitlines()[0] else ","
    lines = [[f.strip() for f in r] for r in csv.reader(text.splitlines(), delimiter=delim)]
    numbered = [(i, r) for i, r in enumerate(lines, 1) if any(r)]
    if not numbered:
        raise DatasetError(f"VoxCeleb2 metadata {path} is empty")
    header = numbered[0][1]
    missing = [c for c in VOX2_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; header is {header}")
    return _meta_rows(path, header, numbered[1:], VOX2_COLUMNS)


def _meta_rows(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
               columns: Sequence[str]) -> dict[str, VoxIdentity]:
    col = {c: header.index(c) for c in columns}
    out: dict[str, VoxIdentity] = {}
    for line_no, row in rows:
        if len(row) < len(columns):
            raise DatasetError(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
        vox_id = row[col[columns[0]]]
        if vox_id in out:
            raise DatasetError(f"{path}:{line_no}: identity {vox_id} listed twice")
        out[vox_id] = VoxIdentity(
            vox_id=vox_id, name=row[col[columns[1]]], gender=row[col["Gender"]].upper(),
            nationality=row[col["Nationality"]] if "Nationality" in col else "",
            set=row[col["Set"]])
    if not out:
        raise DatasetError(f"{path}: no identity rows")
    return out


def identity_roles(identities: Sequence[str], n_train: int, n_val: int, n_test: int, seed: int
                   ) -> dict[str, str]:
    """Learnable PINs' identity split (901 / 100 / 250 of VoxCeleb1's 1,251) by sha256 rank.

    Computed once from the identity LIST (the metadata's, not the files found), so a person's
    role is the same for faces and voices and does not move when other people lack a modality.
    With fewer identities than n_train + n_val + n_test the three counts scale in proportion.
    """
    ids = sorted(set(identities))
    total = n_train + n_val + n_test
    if len(ids) < 3:
        raise DatasetError(f"VoxCeleb split needs >= 3 identities, found {len(ids)}")
    scale = min(1.0, len(ids) / total)
    nt = max(1, round(n_test * scale))
    nv = max(1, round(n_val * scale)) if n_val else 0
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())
    roles = {i: "unseen" for i in ranked[:nt]}
    roles.update({i: "val" for i in ranked[nt:nt + nv]})
    roles.update({i: "train" for i in ranked[nt + nv:]})
    return roles


def frames_under(video_dir: Path) -> list[Path]:
    """Every image at any depth below a video folder, sorted (hidden names left out)."""
    out: list[Path] = []
    dirs, files = list_dir(video_dir)
    out += [f for f in files if has_ext(f, IMAGE_EXTS)]
    for d in dirs:
        out += frames_under(d)
    return out


class _VoxReader(Reader):
    """Shared views: metadata lookups, official sets, per-modality lists."""

    meta: dict[str, VoxIdentity]
    meta_path: Path | None

    def _split_modalities(self) -> None:
        self.voice_samples = [s for s in self.samples if s.modality == "voice"]
        self.face_samples = [s for s in self.samples if s.modality in ("face", "clip")]

    def _row(self, identity: str) -> VoxIdentity:
        try:
            return self.meta[identity]
        except KeyError:
            raise DatasetError(f"identity {identity!r} not in {self.meta_path}") from None

    def gender(self, identity: str) -> str:
        """ "M" or "F" from the metadata (as given by the corpus, not inferred)."""
        return self._row(identity).gender

    def genders(self) -> dict[str, str]:
        """{identity: "M"/"F"} for every identity the metadata labels."""
        return {k: v.gender for k, v in self.meta.items() if v.gender in ("M", "F")}

    def official_set(self, identity: str) -> str:
        """The corpus' own Set column ("dev" / "test"): use it to compare with published EERs."""
        return self._row(identity).set

    def official_split(self) -> dict[str, list[str]]:
        """{set name: sorted identities present here}, from the Set column."""
        out: dict[str, list[str]] = {}
        for identity in self.identities():
            out.setdefault(self.meta[identity].set, []).append(identity)
        return out

    def identity_universe(self) -> list[str]:
        """The identities a split is defined on: the metadata's list when there is one."""
        return sorted(self.meta) if self.meta else self.identities()


class VoxCeleb1(_VoxReader):
    """Voices (and optionally face frames) of VoxCeleb1, keyed by the idXXXXX identity.

    `meta_csv` defaults to `root/vox1_meta.csv`. It is required: the reader exists for the join
    (for audio alone, `SpeechFolder(root / "wav")` reads the same files). Identities or face
    folders absent from the metadata are recorded in `skipped` rather than guessed.
    `samples` holds both modalities; `voice_samples` / `face_samples` hold one each.
    """

    def __init__(
        self,
        root: str | Path,
        meta_csv: str | Path | None = None,
        faces_root: str | Path | None = None,
    ) -> None:
        super().__init__(root)
        self.meta_path = Path(meta_csv) if meta_csv is not None else self.root / "vox1_meta.csv"
        if not self.meta_path.is_file():
            raise DatasetError(f"VoxCeleb1 metadata {self.meta_path} not found (pass meta_csv=...)")
        self.meta = read_vox1_meta(self.meta_path)
        self.wav_root = require_dir(self.root / "wav", "VoxCeleb1 audio folder")
        self.faces_root = require_dir(faces_root, "VoxCeleb1 faces root") if faces_root else None

        self._scan_voices()
        if self.faces_root is not None:
            self._scan_faces(self.faces_root)
        self._finish("wav/<idXXXXX>/<video>/<n>.wav [+ faces <Name or id>/[1.6/]<video>/**/"
                     "<frame>.jpg]")
        self._split_modalities()
        if not self.voice_samples:
            raise DatasetError(f"VoxCeleb1: no usable .wav under {self.wav_root}")
        if self.faces_root is not None and not self.face_samples:
            raise DatasetError(
                f"VoxCeleb1: no usable face frame under {self.faces_root} "
                f"(expected <Name>/[{FACE_SCALE_DIR}/]<video>/**/<frame>.jpg, Name as in "
                f"{self.meta_path.name}, or the idXXXXX id instead of the Name)"
            )

    def _scan_voices(self) -> None:
        for id_dir in list_dir(self.wav_root)[0]:
            if id_dir.name not in self.meta:
                self._skip(id_dir, f"identity {id_dir.name} not in {self.meta_path}")
                continue
            for video_dir in list_dir(id_dir)[0]:
                for f in list_dir(video_dir)[1]:
                    if has_ext(f, (".wav",)):
                        self._add_checked(f, id_dir.name, video_dir.name, "voice")

    def _scan_faces(self, faces_root: Path) -> None:
        by_name = {m.name: m.vox_id for m in self.meta.values()}
        for person_dir in list_dir(faces_root)[0]:
            vox_id = by_name.get(person_dir.name) or (
                person_dir.name if person_dir.name in self.meta else None)
            if vox_id is None:
                self._skip(person_dir, f"face folder {person_dir.name} not in {self.meta_path}")
                continue
            scale_dir = person_dir / FACE_SCALE_DIR
            base = scale_dir if scale_dir.is_dir() else person_dir
            videos, loose = list_dir(base)
            for f in loose:
                if has_ext(f, IMAGE_EXTS):
                    self._skip(f, "face frame outside any video folder "
                                  "(expected <person>/[1.6/]<video>/**/<frame>.jpg)")
            for video_dir in videos:
                for f in frames_under(video_dir):
                    self._add_checked(f, vox_id, video_dir.name, "face")

    def iter_decoded(self, sr: int = 16000) -> Iterator[tuple[Sample, Any]]:
        """(sample, waveform or RGB image) over both modalities; failures go to `skipped`."""
        return self._decoded(self.samples, lambda s: decode_sample(s, sr=sr, require_audio=True))


class VoxCeleb2(_VoxReader):
    """VoxCeleb2 as released: `aac/` audio and `mp4/` face tracks, under `dev/`, `test/` or root.

    Voice samples: the .m4a (or converted .wav) utterances; a video whose face track has no
    audio file next to it uses the track's own sound (`voice_from_video`). Face samples: the
    .mp4 face tracks (modality "clip": frames are decoded from them). `meta_csv` is optional.
    """

    def __init__(self, root: str | Path, meta_csv: str | Path | None = None) -> None:
        super().__init__(root)
        default = self.root / "vox2_meta.csv"
        self.meta_path = Path(meta_csv) if meta_csv is not None else (
            default if default.is_file() else None)
        self.meta = read_vox2_meta(self.meta_path) if self.meta_path else {}
        parts = [self.root / p for p in ("dev", "test") if (self.root / p).is_dir()] or [self.root]
        found = False
        for part in parts:
            for folder, exts in VOX2_AUDIO:
                if (part / folder).is_dir():
                    found = True
                    self._scan(part / folder, exts, "voice")
            if (part / "mp4").is_dir():
                found = True
                self._scan(part / "mp4", VOX2_VIDEO_EXTS, "clip")
        if not found:
            raise DatasetError(f"VoxCeleb2: no aac/, wav/ or mp4/ folder under {self.root} "
                               "(nor under its dev/ or test/)")
        self._finish("[dev|test/](aac|wav|mp4)/<idXXXXX>/<video>/<n>.(m4a|wav|mp4)")
        self._split_modalities()
        heard = {(s.identity, s.group) for s in self.voice_samples}
        self.voice_from_video = [s for s in self.face_samples if (s.identity, s.group) not in heard]

    def _scan(self, base: Path, exts: Sequence[str], modality: str) -> None:
        for id_dir in list_dir(base)[0]:
            if self.meta and id_dir.name not in self.meta:
                self._skip(id_dir, f"identity {id_dir.name} not in {self.meta_path}")
                continue
            for video_dir in list_dir(id_dir)[0]:
                for f in list_dir(video_dir)[1]:
                    if has_ext(f, exts):
                        self._add_checked(f, id_dir.name, video_dir.name, modality)

    def iter_decoded(self, sr: int = 16000, max_frames: int | None = None
                     ) -> Iterator[tuple[Sample, Any]]:
        """(sample, waveform or Clip) over both modalities; failures go to `skipped`."""
        return self._decoded(self.samples, lambda s: decode_sample(
            s, sr=sr, require_audio=s.modality == "voice", max_frames=max_frames))
