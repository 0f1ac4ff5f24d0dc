"""VoxCeleb1: the one public set with the same people's voices AND face images, joined by id.

Audio:  `root/wav/idXXXXX/<video>/<n>.wav`
Faces:  `faces_root/<VGGFace1 name>/1.6/<video>/<frame>.jpg` (the VoxCeleb1 face frames)
Join:   `vox1_meta.csv`, tab-separated despite its name, header
        `VoxCeleb1 ID  VGGFace1 ID  Gender  Nationality  Set`.
Both modalities are keyed by the idXXXXX id, so a face and a voice sample with equal identity
really are the same person (unlike any LFW x speechocean762 pairing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import DatasetError
from train.datasets.core import Reader, Sample, decode_sample, has_ext, list_dir, require_dir
from train.datasets.labels import read_tsv

META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
FACE_SCALE_DIR = "1.6"  # the frames' crop-scale folder in the official face release


@dataclass(frozen=True)
class VoxIdentity:
    """One row of vox1_meta.csv. `gender` is normalised to "M"/"F" like the other label files."""

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
    col = {c: header.index(c) for c in META_COLUMNS}
    out: dict[str, VoxIdentity] = {}
    for line_no, row in rows:
        if len(row) < len(header):
            raise DatasetError(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
        vox_id = row[col["VoxCeleb1 ID"]]
        if vox_id in out:
            raise DatasetError(f"{path}:{line_no}: identity {vox_id} listed twice")
        out[vox_id] = VoxIdentity(
            vox_id=vox_id,
            name=row[col["VGGFace1 ID"]],
            gender=row[col["Gender"]].upper(),
            nationality=row[col["Nationality"]],
            set=row[col["Set"]],
        )
    if not out:
        raise DatasetError(f"{path}: no identity rows")
    return out


class VoxCeleb1(Reader):
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
        self._finish("wav/<idXXXXX>/<video>/<n>.wav [+ faces <Name>/1.6/<video>/<frame>.jpg]")
        self.voice_samples = [s for s in self.samples if s.modality == "voice"]
        self.face_samples = [s for s in self.samples if s.modality == "face"]
        if not self.voice_samples:
            raise DatasetError(f"VoxCeleb1: no usable .wav under {self.wav_root}")
        if self.faces_root is not None and not self.face_samples:
            raise DatasetError(
                f"VoxCeleb1: no usable face frame under {self.faces_root} "
                f"(expected <Name>/{FACE_SCALE_DIR}/<video>/<frame>.jpg, Name as in "
                f"{self.meta_path.name})"
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
        for name_dir in list_dir(faces_root)[0]:
            vox_id = by_name.get(name_dir.name)
            if vox_id is None:
                self._skip(name_dir, f"face folder {name_dir.name} not in {self.meta_path}")
                continue
            scale_dir = name_dir / FACE_SCALE_DIR
            if not scale_dir.is_dir():
                self._skip(name_dir, f"no {FACE_SCALE_DIR}/ sub-folder")
                continue
            for video_dir in list_dir(scale_dir)[0]:
                for f in list_dir(video_dir)[1]:
                    if has_ext(f, (".jpg", ".jpeg", ".png")):
                        self._add_checked(f, vox_id, video_dir.name, "face")

    def _row(self, identity: str) -> VoxIdentity:
        try:
            return self.meta[identity]
        except KeyError:
            raise DatasetError(f"identity {identity!r} not in {self.meta_path}") from None

    def gender(self, identity: str) -> str:
        """ "M" or "F" from the metadata (as given by the corpus, not inferred)."""
        return self._row(identity).gender

    def official_set(self, identity: str) -> str:
        """The corpus' own Set column ("dev" / "test"): use it to compare with published EERs."""
        return self._row(identity).set

    def official_split(self) -> dict[str, list[str]]:
        """{set name: sorted identities present here}, from the Set column."""
        out: dict[str, list[str]] = {}
        for identity in self.identities():
            out.setdefault(self.meta[identity].set, []).append(identity)
        return out

    def iter_decoded(self, sr: int = 16000) -> Iterator[tuple[Sample, Any]]:
        """(sample, waveform or RGB image) over both modalities; failures go to `skipped`."""
        return self._decoded(self.samples, lambda s: decode_sample(s, sr=sr, require_audio=True))
