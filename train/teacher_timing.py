"""Teacher latency for `edgepin bench`'s reference rows, run as a child process.

`python -m train.teacher_timing RUNS WARMUP CLIP face voice` prints one JSON line
{"ms": {row: [ms...]}, "skipped": [...]}. It lives in `train/` because the voice teacher
needs torch, which the device runtime (edge_runtime) never imports, not even in a child.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


def _timed(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append(1e3 * (time.perf_counter() - t0))
    return ms


def main(argv: list[str]) -> dict:
    """Time the requested teachers on the middle frame and the audio of one clip."""
    from edge_runtime.frontend.face import DlibHogDetector
    from edge_runtime.frontend.video import decode_clip

    runs, warmup, clip, which = int(argv[0]), int(argv[1]), argv[2], argv[3:]
    c = decode_clip(clip)
    img = c.frames[len(c.frames) // 2].image
    det = DlibHogDetector().detect(img)[0]
    out: dict[str, list[float]] = {}
    skipped: list[dict[str, str]] = []
    try:
        if "face" not in which:
            raise LookupError("not requested")
        from train.teachers import DlibFaceTeacher, FaceTeacher

        ft, ref = FaceTeacher(), DlibFaceTeacher()
        out["face teacher (dlib ResNet, ONNX port)"] = _timed(lambda: ft.embed(img, det), runs,
                                                              warmup)
        out["face teacher (dlib ResNet, dlib's own)"] = _timed(lambda: ref.embed(img, det), runs,
                                                               warmup)
    except Exception as e:  # noqa: BLE001 - any failure becomes a reported skip
        skipped.append({"what": "face teacher", "reason": f"{type(e).__name__}: {e}"})
    try:
        if "voice" not in which:
            raise LookupError("not requested")
        import torch

        # one thread, the students' budget too: on a shared 2-core CPU torch's default pool
        # made one 3 s utterance take ~4 s instead of ~70 ms (oversubscription)
        torch.set_num_threads(1)
        from train.teachers import VoiceTeacher

        vt = VoiceTeacher()
        out["voice teacher (Resemblyzer)"] = _timed(lambda: vt.embed(c.audio), runs, warmup)
    except Exception as e:  # noqa: BLE001
        skipped.append({"what": "voice teacher", "reason": f"{type(e).__name__}: {e}"})
    return {"ms": out, "skipped": skipped}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
