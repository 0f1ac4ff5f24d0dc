"""The GRID pass of the attack benchmark: the real talking-face clips, enrolled from their
first halves, probed by their second halves as they are (genuine), with the audio shifted by
``GRID_SHIFTS`` seconds, or with another clip's audio (swapped); liveness required.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.attacks_present import attempt, row
from edge_runtime.access.enroll import Enroller
from edge_runtime.access.pipeline import PipelineConfig, Verifier
from edge_runtime.cli.demo import shifted_attack
from edge_runtime.frontend.video import Clip, decode_clip
from edge_runtime.models import ModelBundle
from edge_runtime.store.gallery import Gallery
from edge_runtime.store.gallery_handle import GalleryHandle
from edge_runtime.store.keys import create_key

GRID_SHIFTS = (-0.8, -0.5, -0.3, 0.3, 0.5, 0.8)


def run_grid(bundle: ModelBundle, grid_dir: Path, detector: Any, gate: Any
             ) -> dict[str, list[dict[str, Any]]]:
    """GRID genuine / shifted / swapped through the Verifier, liveness required."""
    paths = sorted(grid_dir.glob("*.mpg"))
    clips = {p.stem: decode_clip(p) for p in paths}
    halves = {n: c.split(c.start + c.duration / 2) for n, c in clips.items()}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="edgepin-attacks-grid-") as tmp:
        key = create_key(Path(tmp) / "g.key")
        with Gallery.open(Path(tmp) / "g.db", key) as gallery:
            enroller = Enroller(bundle, detector, gate, min_speech_s=0.5)
            for n in clips:
                enroller.enroll_clip(gallery, n, halves[n][0])
            handle = GalleryHandle.wrap(gallery)
            vs = {m: Verifier(bundle, handle, PipelineConfig(mode=m, min_speech_s=0.5),
                              detector, gate) for m in ("face+liveness", "two-factor")}

            def present(kind: str, who: str, expected: str | None, clip: Clip) -> None:
                assert clip.audio is not None
                r = attempt(vs, clip.frames, clip.audio, f"{kind} {who}")
                out[kind].append({"who": who, "expected": expected,
                                  "speech_s": next(iter(r.values())).speech_s,
                                  **{m: row(x) for m, x in r.items()}})

            for n in clips:
                present("grid-genuine", n, n, halves[n][1])
                for sh in GRID_SHIFTS:
                    present("grid-shifted", n, None, shifted_attack(clips[n], halves[n][1], sh))
                for o in clips:
                    if o != n:
                        swapped = dataclasses.replace(halves[n][1], audio=halves[o][1].audio)
                        present("grid-swapped", n, None, swapped)
            for v in vs.values():
                v.close()
    return out
