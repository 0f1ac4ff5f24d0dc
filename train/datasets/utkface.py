"""UTKFace (`<age>_<gender>_<race>_<timestamp>.jpg.chip.jpg`, one flat folder, no identities).

UTKFace holds about 20 k people, mostly one image each, and no identity labels: it serves
identity-free distillation (the teacher labels every image) and is never a source of genuine
pairs. Each image is its own pseudo-identity `utk/<timestamp-stem>`. Age, gender and race come
from the file name; a few published names are malformed (a missing race field, a stray space):
those images are still valid faces, so they are kept with unknown attributes and listed in
`malformed` with the reason, never dropped silently and never a crash.

Terms: UTKFace is for non-commercial research only (see models/README.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from train.datasets.core import Reader, has_ext, list_dir, normalise_exts

log = logging.getLogger(__name__)

UTK_SUFFIX = ".jpg.chip.jpg"
_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<stamp>\d{8,20})\.jpg\.chip\.jpg$")
GENDERS = ("male", "female")  # UTKFace: 0 male, 1 female
RACES = ("white", "black", "asian", "indian", "other")  # UTKFace: 0..4
UTK_ID_PREFIX = "utk/"


@dataclass(frozen=True)
class UTKAttributes:
    """What UTKFace's file name says about the person."""

    age: int
    gender: str
    race: str


def parse_utk_name(name: str) -> UTKAttributes | str:
    """Attributes from a UTKFace file name, or the reason it is malformed."""
    m = _NAME.match(name)
    if m is None:
        if not name.endswith(UTK_SUFFIX):
            return f"name does not end in {UTK_SUFFIX!r}"
        fields = name[: -len(UTK_SUFFIX)].split("_")
        return (f"expected <age>_<gender 0|1>_<race 0-4>_<timestamp>{UTK_SUFFIX}, "
                f"got {len(fields)} field(s) {fields}")
    age = int(m["age"])
    if age > 120:
        return f"age {age} out of range"
    return UTKAttributes(age, GENDERS[int(m["gender"])], RACES[int(m["race"])])


class UTKFace(Reader):
    """Images in one folder (`data/UTKFace/unlabeled/` of mattans/AgeProgression).

    `attributes[path]` holds the parsed name (absent for malformed names); `malformed` lists
    (path, reason) for names that do not parse; `skipped` lists unusable files as elsewhere.
    """

    layout = f"<root>/<age>_<gender>_<race>_<timestamp>{UTK_SUFFIX}"

    def __init__(self, root: str | Path, exts: Sequence[str] = (".jpg",)) -> None:
        super().__init__(root)
        self.attributes: dict[Path, UTKAttributes] = {}
        self.malformed: list[tuple[Path, str]] = []
        dirs, files = list_dir(self.root)
        if not files and len(dirs) == 1 and dirs[0].name == "unlabeled":
            self.root = dirs[0]  # accept the parent folder too
            files = list_dir(self.root)[1]
        exts = normalise_exts(exts)
        for f in files:
            if not has_ext(f, exts):
                continue
            parsed = parse_utk_name(f.name)
            if isinstance(parsed, str):
                self.malformed.append((f, parsed))
            n_before = len(self.samples)
            self._add_checked(f, UTK_ID_PREFIX + f.name.split(".")[0].replace(" ", ""), None, "face")
            if len(self.samples) > n_before and not isinstance(parsed, str):
                self.attributes[f] = parsed
        if self.malformed:
            log.warning("%s: %d file name(s) do not follow the UTKFace pattern (kept, attributes "
                        "unknown), e.g. %s: %s", self.root, len(self.malformed),
                        self.malformed[0][0].name, self.malformed[0][1])
        self._finish(self.layout)


def is_unlabelled(identity: str) -> bool:
    """True for UTKFace pseudo-identities (one image each; no identity label)."""
    return identity.startswith(UTK_ID_PREFIX)
