"""A noisy, reverberant copy of a voice set's held-out speakers, made once from a fixed seed.

Every held-out utterance (the speakers `holdout_split` puts in `test`) is copied through its
own simulated room (`pyroomacoustics` shoebox sized by Sabine's formula; the design RT60s are
spread evenly over 0.2-0.6 s and dealt to the files at random; random source and microphone
positions) and one additive noise at an SNR drawn uniformly in 5-20 dB: fan, street (synthetic, `train.augment_room`) or babble of 3-5 OTHER held-out
speakers' utterances. No band-limiting, speed or gain change: the copy isolates room and noise.
The result is a `<speaker>/<utt>.flac` folder evaluated with `edgepin eval voice --split all`
(its speakers were held out from training) plus `ROOM_SET.json`, which lists every file's
room, RT60, noise and SNR. The same seed and source data make byte-identical audio.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.progress import Progress

from edge_runtime.errors import DatasetError
from edge_runtime.frontend.audio import load_audio
from train.augment_room import RirBank, ViewParams, apply_view
from train.datasets import SpeechFolder, file_sha256, holdout_split

ROOM_SET_VERSION = "room-eval-v1"


def make_room_copy(data: str | Path, out: str | Path, split_cfg: dict, *, seed: int = 0,
                   snr_db: tuple[float, float] = (5.0, 20.0),
                   rt60_s: tuple[float, float] = (0.2, 0.6)) -> dict:
    """Write the copy under `out` and return its description (also `out/ROOM_SET.json`)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty: the room copy is made once; remove it to remake")
    reader = SpeechFolder(data)
    test = set(holdout_split(reader.identities(), split_cfg["test_fraction"],
                             split_cfg["val_fraction"], split_cfg["seed"])["test"])
    samples = [s for s in reader.samples if s.identity in test]
    if not samples:
        raise DatasetError(f"{data}: no held-out utterance to copy")
    rng = np.random.default_rng(seed)
    audio = [load_audio(s.path) for s in samples]
    hashes = [file_sha256(s.path)[:16] for s in samples]
    talkers = dict(zip(hashes, audio, strict=True))
    # one room per file: RT60s spread evenly over the range, rooms dealt out at random
    bank = RirBank(len(samples), rt60_s, seed=1000 + seed)
    rooms = rng.permutation(len(samples))
    files = []
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("room copy", total=len(samples))
        for i, (s, wav) in enumerate(zip(samples, audio, strict=True)):
            kind = str(rng.choice(["fan", "street", "babble"]))
            others = [h for h, o in zip(hashes, samples, strict=True) if o.identity != s.identity]
            babble: tuple[str, ...] = ()
            if kind == "babble" and not others:
                kind = "fan"  # a set with one held-out speaker has nobody else to babble
            if kind == "babble":
                k = min(int(rng.integers(3, 6)), len(others))
                pick = rng.choice(len(others), size=k, replace=False)
                babble = tuple(others[j] for j in sorted(pick))
            p = ViewParams(seed=int(rng.integers(2**31)), rir=int(rooms[i]), noise=kind,
                           snr_db=float(np.round(rng.uniform(*snr_db), 2)), babble=babble)
            y = apply_view(wav, p, bank, talkers)
            dest = out / s.identity / (s.path.stem + ".flac")
            dest.parent.mkdir(parents=True, exist_ok=True)
            sf.write(dest, y, 16000, format="FLAC", subtype="PCM_16")
            files.append({"file": str(dest.relative_to(out)), "source": s.path.name,
                          "noise": kind, "snr_db": p.snr_db, "babble_talkers": len(babble),
                          **bank.rooms[p.rir]})
            progress.advance(task)
    rt = np.array([f["rt60_s"] for f in files])
    snr = np.array([f["snr_db"] for f in files])
    desc = {
        "version": ROOM_SET_VERSION, "source": str(data), "seed": seed,
        "split": {**split_cfg, "side": "test"}, "speakers": len(test), "files": len(files),
        "rule": __doc__.split("\n\n")[1].replace("\n", " "),
        "rt60_s": {"min": float(rt.min()), "median": float(np.median(rt)), "max": float(rt.max())},
        "snr_db": {"min": float(snr.min()), "median": float(np.median(snr)), "max": float(snr.max())},
        "noise_counts": {k: sum(f["noise"] == k for f in files) for k in ("fan", "street", "babble")},
        "items": files,
    }
    (out / "ROOM_SET.json").write_text(json.dumps(desc, indent=1))
    return desc
