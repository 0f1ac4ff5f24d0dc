"""Miniature VoxCeleb1 / VoxCeleb2 trees in the official layouts, built from real fixtures.

The 7 GRID clips (one speaker each) become 7 identities with face AND voice; each clip is cut
in two halves = two "videos" of that person. speechocean762 speakers become voice-only
identities (VoxCeleb has people whose faces are missing too). Files are written as released:
VoxCeleb1 `wav/idXXXXX/<video>/NNNNN.wav` + `unzippedFaces/<Name>/1.6/<video>/<utt>/<frame>.jpg`
(one level deeper than the plain face release, as some distributions have), `vox1_meta.csv`;
VoxCeleb2 `dev/aac/idXXXXX/<video>/NNNNN.m4a` + `dev/mp4/idXXXXX/<video>/NNNNN.mp4`,
`vox2_meta.csv`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

GRID = ("bbaf2n", "lbax4n", "lbbc2a", "lrwp9a", "lwbsza", "sbia1a", "sbwe5n")
GENDER = {"bbaf2n": "m", "lbax4n": "m", "lbbc2a": "m", "lrwp9a": "m", "lwbsza": "m",
          "sbia1a": "f", "sbwe5n": "f"}  # as heard in the clips (identity labels only)
VIDEOS = ("vidA_half1", "vidB_half2")


def _halves(fixtures: Path, stem: str) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    from edge_runtime.frontend.video import decode_clip

    clip = decode_clip(fixtures / "grid" / f"{stem}.mpg")
    cut = clip.duration / 2
    out = []
    for lo, hi in ((0.0, cut), (cut, clip.duration)):
        wav = clip.audio[int(lo * clip.sample_rate): int(hi * clip.sample_rate)]
        frames = [f.image for f in clip.frames if lo <= f.t < hi]
        out.append((wav, frames))
    return out


def build_vox1(fixtures: Path, root: Path, frames_per_video: int = 3) -> Path:
    """VoxCeleb1-shaped tree; returns its root."""
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    for k, stem in enumerate(GRID):
        vid, name = f"id1{k:04d}", f"GRID_{stem}"
        rows.append(f"{vid}\t{name}\t{GENDER[stem]}\tUK\tdev")
        for video, (wav, frames) in zip(VIDEOS, _halves(fixtures, stem), strict=True):
            d = root / "wav" / vid / video
            d.mkdir(parents=True)
            sf.write(d / "00001.wav", wav, 16000)
            fd = root / "unzippedFaces" / name / "1.6" / video / "00001"
            fd.mkdir(parents=True)
            for j in np.linspace(0, len(frames) - 1, frames_per_video).astype(int):
                cv2.imwrite(str(fd / f"{j:07d}.jpg"), frames[j][:, :, ::-1])
    for k, spk in enumerate(sorted(p.name for p in (fixtures / "speechocean762").iterdir()
                                   if p.is_dir())):
        vid = f"id2{k:04d}"
        rows.append(f"{vid}\t{spk}\tf\tCN\ttest")
        for j, f in enumerate(sorted((fixtures / "speechocean762" / spk).glob("*.flac"))):
            d = root / "wav" / vid / f"utt{j}"
            d.mkdir(parents=True)
            data, sr = sf.read(f)
            sf.write(d / "00001.wav", data, sr)
    (root / "vox1_meta.csv").write_text("\n".join(rows) + "\n")
    return root


def _write_mp4(path: Path, frames: list[np.ndarray], fps: int = 25) -> None:
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=fps)
        st.height, st.width = frames[0].shape[:2]
        st.pix_fmt = "yuv420p"
        for img in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img),
                                                            format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def _write_m4a(path: Path, wav: np.ndarray, sr: int = 16000) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as out:
        st = out.add_stream("aac", rate=sr)
        st.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wav.astype(np.float32)[None, :], format="fltp",
                                           layout="mono")
        frame.sample_rate = sr
        for pkt in st.encode(frame):
            out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def build_vox2(fixtures: Path, root: Path) -> Path:
    """VoxCeleb2-shaped tree (dev/ only) with m4a audio and mp4 face tracks."""
    rows = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "]
    for k, stem in enumerate(GRID):
        vid = f"id0{k:04d}"
        rows.append(f"{vid} ,n{k:06d} ,{GENDER[stem]} ,dev ")
        for video, (wav, frames) in zip(VIDEOS, _halves(fixtures, stem), strict=True):
            a = root / "dev" / "aac" / vid / video
            m = root / "dev" / "mp4" / vid / video
            a.mkdir(parents=True)
            m.mkdir(parents=True)
            _write_m4a(a / "00001.m4a", wav)
            _write_mp4(m / "00001.mp4", frames)
    (root / "vox2_meta.csv").write_text("\n".join(rows) + "\n")
    return root
