"""LibriSpeech as shipped in the Resemblyzer repository: one utterance per speaker, flat.

`audio_data/librispeech_train-clean-100/` of `resemble-ai/Resemblyzer` holds 251 files
`<speaker>-<chapter>-<utt>.flac` (16 kHz, mean 12.5 s), one per speaker: 251 native English
speakers, LibriSpeech (Panayotov et al. 2015), CC BY 4.0. Only that folder may be used: the
repository's `audio_data/librispeech_test-other/` is reserved for independent evaluation and
is never extracted here (`extract` names the one folder it takes).

With one recording per speaker, the training set cuts each utterance into 2 s windows (the
pieces); two pieces of one recording make a same-session pair, easier than a real genuine
trial, so no evaluation here pairs them (`LibriSpeechFlat.same_session_warning`).

Extraction (a fresh machine): fetch a snapshot of the repository, then
`python -m train.datasets.librispeech <git dir> /work/data/librispeech`.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.errors import DatasetError
from train.datasets.core import Reader, has_ext, list_dir

FOLDER = "audio_data/librispeech_train-clean-100"
RESERVED = "audio_data/librispeech_test-other"
EXPECTED_SPEAKERS = 251
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class LibriSpeechFlat(Reader):
    """`root/<speaker>-<chapter>-<utt>.flac`: identity = "libri<speaker>", group = chapter.

    The prefix keeps a LibriSpeech number from ever matching another corpus's speaker name
    when both train one student. Files whose name does not follow the pattern are skipped
    with the reason.
    """

    layout = "<root>/<speaker>-<chapter>-<utt>.flac"
    same_session_warning = ("one recording per speaker: pieces of it form same-session pairs, "
                            "easier than real genuine trials")

    def __init__(self, root: str | Path, exts: Sequence[str] = (".flac", ".wav")) -> None:
        super().__init__(root)
        if self.root.name == Path(RESERVED).name or RESERVED in self.root.as_posix():
            raise DatasetError(f"{self.root}: LibriSpeech test-other is reserved for independent "
                               "evaluation and must not be read")
        for f in list_dir(self.root)[1]:
            if not has_ext(f, exts):
                continue
            m = _NAME.match(f.stem)
            if m is None:
                self._skip(f, "name is not <speaker>-<chapter>-<utt>")
                continue
            self._add_checked(f, f"libri{m.group(1)}", m.group(2), "voice")
        self._finish(self.layout)


def extract(git_dir: str | Path, dest: str | Path) -> Path:
    """Extract only the train-clean-100 folder from a Resemblyzer snapshot into `dest`; check it.

    Returns the folder holding the flac files. Raises DatasetError when the snapshot lacks the
    folder or the result is not 251 speakers with one utterance each.
    """
    git_dir, dest = Path(git_dir), Path(dest)
    if not git_dir.exists():
        raise DatasetError(f"Resemblyzer git directory {git_dir} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(git_dir), "archive", "HEAD", FOLDER],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise DatasetError(f"{git_dir}: git archive of {FOLDER} failed: "
                           f"{archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(FOLDER)]
        if any(m.name.startswith(RESERVED) for m in members):  # cannot happen with FOLDER
            raise DatasetError("refusing to extract the reserved test-other folder")
        tar.extractall(dest, members=members, filter="data")
    folder = dest / FOLDER
    check(folder)
    return folder


def check(folder: str | Path) -> LibriSpeechFlat:
    """The reader of an extracted folder, after checking 251 speakers, one utterance each."""
    reader = LibriSpeechFlat(folder)
    per = reader.by_identity()
    if len(per) != EXPECTED_SPEAKERS or any(len(v) != 1 for v in per.values()):
        raise DatasetError(f"{folder}: expected {EXPECTED_SPEAKERS} speakers with one utterance "
                           f"each, found {len(per)} speakers and {len(reader)} files "
                           f"({len(reader.skipped)} skipped)")
    return reader


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m train.datasets.librispeech GIT_DIR DEST`: extract and check."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("git_dir", help="git directory of a resemble-ai/Resemblyzer snapshot")
    p.add_argument("dest", help="where to extract (outside the project), e.g. /work/data/librispeech")
    args = p.parse_args(argv)
    try:
        folder = extract(args.git_dir, args.dest)
    except DatasetError as exc:
        print(f"error: {exc}")
        return 1
    print(f"{folder}: {EXPECTED_SPEAKERS} speakers, one utterance each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
