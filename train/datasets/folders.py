"""Folder-per-identity readers for faces (LFW, AT&T), speech (speechocean762, FSDD, LibriSpeech)
and talking-face clips (VoxCeleb2, GRID).

Layout rules, shared by all three:
- every sub-folder of `root` is one identity, named by the folder;
- files are matched by extension, case-insensitively; names starting with "." are ignored;
- files of another extension (GENDER.tsv, LibriSpeech .trans.txt) are ignored;
- anything deeper than the layout allows is ignored (documented per reader);
- a matching file that is empty, unreadable or has the wrong header is kept out of `samples`
  and recorded in `skipped` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.errors import DatasetError
from train.datasets.core import Reader, Sample, decode_sample, has_ext, list_dir, normalise_exts


class _IdentityTree(Reader):
    """Scan `root/<identity>/<file>` and, when `grouped`, `root/<identity>/<group>/<file>`."""

    modality = ""
    layout = ""

    def __init__(self, root: str | Path, exts: Sequence[str], *, grouped: bool) -> None:
        super().__init__(root)
        self.exts = normalise_exts(exts)
        dirs, files = list_dir(self.root)
        self._scan_root_files([f for f in files if has_ext(f, self.exts)])
        for ident_dir in dirs:
            sub_dirs, sub_files = list_dir(ident_dir)
            for f in sub_files:
                if has_ext(f, self.exts):
                    self._add_checked(f, ident_dir.name, None, self.modality)
            if not grouped:
                continue
            for group_dir in sub_dirs:
                for f in list_dir(group_dir)[1]:
                    if has_ext(f, self.exts):
                        self._add_checked(f, ident_dir.name, group_dir.name, self.modality)
        self._finish(self.layout)

    def _scan_root_files(self, files: list[Path]) -> None:
        """Media files lying directly in root belong to no identity folder: report them."""
        for f in files:
            self._skip(f, "outside any identity folder (expected <root>/<identity>/<file>)")


class FaceFolder(_IdentityTree):
    """Face images as `root/<identity>/<image>` (LFW `<Name>/<Name>_0001.jpg`, AT&T `sN/M.pgm`).

    Sub-folders inside an identity folder are ignored.
    """

    modality = "face"
    layout = "<root>/<identity>/<image>"

    def __init__(
        self, root: str | Path, exts: Sequence[str] = (".jpg", ".jpeg", ".png", ".pgm")
    ) -> None:
        super().__init__(root, exts, grouped=False)

    def iter_decoded(self) -> Iterator[tuple[Sample, Any]]:
        """(sample, RGB uint8 image) pairs; files that fail to decode go to `skipped`."""
        return self._decoded(
            self.samples, lambda s: decode_sample(s, sr=16000, require_audio=False)
        )


class SpeechFolder(_IdentityTree):
    """Utterances as `root/<identity>/<utt>` or `root/<identity>/<session>/<utt>`.

    The second form is LibriSpeech (`<speaker>/<chapter>/<utt>.flac`, group = chapter) and
    VoxCeleb1 audio (`wav/idXXXXX/<video>/<n>.wav`, group = video). Deeper levels are ignored.
    """

    modality = "voice"
    layout = "<root>/<identity>/[<session>/]<utterance>"

    def __init__(self, root: str | Path, exts: Sequence[str] = (".wav", ".flac")) -> None:
        super().__init__(root, exts, grouped=True)

    def iter_decoded(self, sr: int = 16000) -> Iterator[tuple[Sample, Any]]:
        """(sample, float32 mono waveform at `sr`) pairs; failures go to `skipped`."""
        return self._decoded(self.samples, lambda s: decode_sample(s, sr=sr, require_audio=True))


class ClipFolder(_IdentityTree):
    """Talking-face clips (face and voice of one person), in either of two layouts.

    - Nested: `root/<identity>/<clip>` or `root/<identity>/<video>/<clip>` (VoxCeleb2
      `idXXXXX/<video>/<n>.mp4`, group = video).
    - Flat: `root/<clip>` directly in root. Each such clip is taken to be its OWN identity,
      named by the file stem (`root/bbaf2n.mpg` -> identity "bbaf2n"). That holds for the
      GRID sample shipped here (one clip per speaker); it does NOT hold for the full GRID
      corpus, whose stems are sentence codes shared across speakers: lay that out as
      `<speaker>/<clip>.mpg` instead.

    Both layouts may be mixed; a stem equal to an identity folder name is refused, because it
    would silently merge two people.
    """

    modality = "clip"
    layout = "<root>/<identity>/[<video>/]<clip> or flat <root>/<clip> (identity = stem)"

    def __init__(
        self, root: str | Path, exts: Sequence[str] = (".mp4", ".mpg", ".avi", ".mkv")
    ) -> None:
        super().__init__(root, exts, grouped=True)
        folder_ids = {s.identity for s in self.samples if s.path.parent != self.root}
        flat = [s for s in self.samples if s.path.parent == self.root]
        stems: dict[str, Path] = {}
        for s in flat:
            if s.identity in folder_ids:
                raise DatasetError(
                    f"{self.root}: flat clip {s.path.name} has the same name as identity folder "
                    f"{s.identity}/; rename one of them"
                )
            if s.identity in stems:
                raise DatasetError(
                    f"{self.root}: flat clips {stems[s.identity].name} and {s.path.name} share "
                    f"the stem {s.identity!r}, so they would be one identity; rename one"
                )
            stems[s.identity] = s.path

    def _scan_root_files(self, files: list[Path]) -> None:
        for f in files:
            self._add_checked(f, f.stem, None, self.modality)

    def iter_decoded(
        self, sr: int = 16000, require_audio: bool = True, max_frames: int | None = None
    ) -> Iterator[tuple[Sample, Any]]:
        """(sample, edge_runtime.frontend.video.Clip) pairs; failures (e.g. no audio) go to `skipped`.

        `max_frames` caps decoded pictures per clip (memory on long VoxCeleb2 clips).
        """
        return self._decoded(
            self.samples,
            lambda s: decode_sample(s, sr=sr, require_audio=require_audio, max_frames=max_frames),
        )
