"""Where dlib's CNN face box sits relative to the HOG box on the same face (LFW photos).

The 68-point landmark model was trained on HOG-detector boxes; ``edge_runtime.frontend.avsync``
moves a CNN box to where HOG would put it before the 68-point fit (``TO_HOG_BOX``). This
measures that mapping on LFW photos (never on the GRID clips that evaluate AV sync): the
median, over photos where both detectors find exactly one face, of the HOG box centre's shift
in CNN box widths / heights and of the size ratio.

    python -m benchmarks.box_convention --data ../shared/data/lfw --models models -n 250
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from edge_runtime.face_detectors import open_face_detector
from edge_runtime.frontend.face import DlibHogDetector, load_image


def measure(lfw: Path, models: Path, n: int, seed: int = 0) -> dict[str, float]:
    cnn = open_face_detector("cnn", models=models).detector
    hog = DlibHogDetector()
    paths = sorted(Path(lfw).rglob("*.jpg"))
    random.Random(seed).shuffle(paths)
    rows = []
    for p in paths[:n]:
        img = load_image(p)
        h, c = hog.detect(img), cnn.detect(img)
        if len(h) != 1 or len(c) != 1:
            continue
        hb, cb = np.array(h[0].box, float), np.array(c[0].box, float)
        cw, ch = cb[2] - cb[0], cb[3] - cb[1]
        rows.append([((hb[0] + hb[2]) - (cb[0] + cb[2])) / 2 / cw,
                     ((hb[1] + hb[3]) - (cb[1] + cb[3])) / 2 / ch,
                     (hb[2] - hb[0]) / cw, (hb[3] - hb[1]) / ch])
    r = np.array(rows)
    med = np.median(r, axis=0)
    return {"photos": len(rows), "dx": float(med[0]), "dy": float(med[1]),
            "scale_w": float(med[2]), "scale_h": float(med[3])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("-n", type=int, default=250, help="photos tried")
    args = ap.parse_args(argv)
    print(measure(args.data, args.models, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
