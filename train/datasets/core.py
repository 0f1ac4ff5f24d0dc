"""Shared pieces of the dataset readers: the Sample record, file checks and the reader base.

Plain Python + numpy only (no torch): calibration/ and the device tools read the same folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import DatasetError, MediaError

log = logging.getLogger(__name__)

MODALITIES = ("face", "voice", "clip")

# First bytes of each container we accept. A file whose head does not match is recorded as
# unreadable at scan time: scraped datasets often hold HTML error pages saved as ".jpg",
# and catching those before training is cheaper than a crash in a data-loader worker.
# Extensions not listed here are only checked for existence and size.
_SIGNATURES: dict[str, tuple[tuple[int, bytes], ...]] = {
    ".jpg": ((0, b"\xff\xd8\xff"),),
    ".jpeg": ((0, b"\xff\xd8\xff"),),
    ".png": ((0, b"\x89PNG\r\n\x1a\n"),),
    ".pgm": ((0, b"P5"), (0, b"P2")),
    ".wav": ((0, b"RIFF"), (0, b"RIFX"), (0, b"RF64")),
    ".flac": ((0, b"fLaC"), (0, b"ID3")),
    ".mp4": ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip")),
    ".mpg": ((0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3")),
    ".avi": ((0, b"RIFF"),),
    ".mkv": ((0, b"\x1a\x45\xdf\xa3"),),
}


@dataclass(frozen=True)
class Sample:
    """One media file of one person.

    `group` is the recording session (VoxCeleb video, LibriSpeech chapter): files of one group
    share channel and background, so genuine pairs across groups are the harder, honest ones.
    `modality` is keyword-only and has no default so a face can never pass for a voice.
    """

    identity: str
    path: Path
    group: str | None = None
    modality: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(
                f"Sample {self.path}: modality must be one of {MODALITIES}, got {self.modality!r}"
            )
        if not self.identity:
            raise ValueError(f"Sample {self.path}: empty identity")


def check_file(path: Path) -> str | None:
    """Why `path` is unusable (empty, unreadable, wrong header), or None if it looks fine."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    sigs = _SIGNATURES.get(path.suffix.lower())
    if sigs and not any(head[off : off + len(sig)] == sig for off, sig in sigs):
        return f"not a {path.suffix.lower()} file (header {head[:8]!r})"
    return None


def list_dir(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sub-folders, other entries) of `folder`, sorted by name, hidden names left out.

    Anything that is not a directory counts as a file, so a broken symlink still reaches
    `check_file` and gets reported instead of vanishing.
    """
    dirs: list[Path] = []
    files: list[Path] = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            (dirs if entry.is_dir() else files).append(Path(entry.path))
    return sorted(dirs), sorted(files)


def has_ext(path: Path, exts: Sequence[str]) -> bool:
    return path.suffix.lower() in exts


def normalise_exts(exts: Sequence[str]) -> tuple[str, ...]:
    """Lower-case, dot-prefixed extensions, so ".JPG" files of old cameras still match."""
    if isinstance(exts, str):
        exts = (exts,)
    out = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
    if not out:
        raise ValueError("exts must name at least one file extension")
    return out


def require_dir(root: str | Path, what: str = "dataset root") -> Path:
    """`root` as an absolute Path, or DatasetError naming it if it is not a folder."""
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"{what} {path} is not a directory")
    return path


def sort_key(sample: Sample) -> tuple[str, str, str, str]:
    return (sample.identity, sample.modality, sample.group or "", sample.path.as_posix())


class Reader:
    """Common behaviour of every reader: sample lists, identity views and bad-file reports.

    Subclasses fill `samples` and call `_skip` for every bad file during `__init__`, then call
    `_finish`. Nothing is dropped silently: each bad file lands in `skipped` with a reason and
    one warning per scan gives the count.
    """

    root: Path
    samples: list[Sample]
    skipped: list[tuple[Path, str]]

    def __init__(self, root: str | Path) -> None:
        self.root = require_dir(root)
        self.samples = []
        self.skipped = []
        self._skipped_paths: set[Path] = set()

    # -- building ---------------------------------------------------------------------------

    def _skip(self, path: Path, reason: str) -> None:
        if path not in self._skipped_paths:
            self._skipped_paths.add(path)
            self.skipped.append((path, reason))

    def _add_checked(self, path: Path, identity: str, group: str | None, modality: str) -> None:
        reason = check_file(path)
        if reason is None:
            self.samples.append(Sample(identity, path, group, modality=modality))
        else:
            self._skip(path, reason)

    def _finish(self, layout: str) -> None:
        """Sort, report skips once, and refuse an empty result (naming the root)."""
        self.samples.sort(key=sort_key)
        if self.skipped:
            first_path, first_reason = self.skipped[0]
            log.warning(
                "%s: skipped %d unusable file(s), e.g. %s (%s); see .skipped for all",
                self.root,
                len(self.skipped),
                first_path,
                first_reason,
            )
        if not self.samples:
            extra = f"; {len(self.skipped)} file(s) skipped as unusable" if self.skipped else ""
            raise DatasetError(
                f"{type(self).__name__}: no usable sample under {self.root} "
                f"(expected layout {layout}){extra}"
            )

    # -- views ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}: {len(self.samples)} samples, "
            f"{len(self.identities())} identities, {len(self.skipped)} skipped)"
        )

    def identities(self) -> list[str]:
        return sorted({s.identity for s in self.samples})

    def by_identity(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {}
        for s in self.samples:  # already sorted, so each list and the key order are too
            out.setdefault(s.identity, []).append(s)
        return out

    # -- decoding ---------------------------------------------------------------------------

    def _decoded(
        self, samples: Sequence[Sample], decode: Callable[[Sample], Any]
    ) -> Iterator[tuple[Sample, Any]]:
        """Yield (sample, decode(sample)); a MediaError is recorded in `skipped`, not raised.

        Only MediaError is caught: any other exception is a bug and must surface.
        """
        failures = 0
        try:
            for sample in samples:
                try:
                    value = decode(sample)
                except MediaError as exc:
                    failures += 1
                    self._skip(sample.path, f"decode failed: {exc}")
                    continue
                yield sample, value
        finally:
            if failures:
                log.warning(
                    "%s: %d file(s) failed to decode and were skipped; see .skipped",
                    self.root,
                    failures,
                )


def decode_sample(
    sample: Sample, *, sr: int, require_audio: bool, max_frames: int | None = None
) -> Any:
    """Decode one sample with the device runtime's loaders (imported lazily: they are heavier
    than a folder scan and the readers must import on a machine without them)."""
    if sample.modality == "face":
        from edge_runtime.frontend.face import load_image

        return load_image(sample.path)
    if sample.modality == "voice":
        from edge_runtime.frontend.audio import load_audio

        return load_audio(sample.path, sr=sr)
    from edge_runtime.frontend.video import decode_clip

    if max_frames is None:  # keep to the brief's decode_clip(path, *, sr, require_audio)
        return decode_clip(sample.path, sr=sr, require_audio=require_audio)
    return decode_clip(sample.path, sr=sr, require_audio=require_audio, max_frames=max_frames)
