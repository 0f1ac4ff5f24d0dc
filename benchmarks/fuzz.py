"""Seeded fuzz run of the device runtime: malformed images, audio, video, gallery, audit and
engine files, through the library entry points and the real `edgepin` commands (in-process).

A run passes when (1) no exception other than an EdgepinError escapes any entry point and no
traceback is logged, and (2) nothing is lost: every gallery row present before is present
after, byte for byte, the gallery's integrity manifest verifies with no quarantined or
deleted identity, and the audit log's keyed chain and head anchor verify (before and after).

    python benchmarks/fuzz.py --seed 18 --n 240 --out benchmarks/fuzz.md

Inputs are mutations (truncation, bit flips, inserted/zeroed/duplicated runs, header swaps)
of real bundled files (LFW photo, speechocean762 recording, GRID clip) plus crafted headers
(20000x20000 PNG/JPEG/BMP/GIF, text files, zero bytes). The seed fixes every input.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sqlite3
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime.errors import EdgepinError  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
FACE = FIXTURES / "lfw/Tony_Blair/Tony_Blair_0001.jpg"
FACE2 = FIXTURES / "lfw/Serena_Williams/Serena_Williams_0001.jpg"
VOICE = FIXTURES / "speechocean762/SPEAKER0120/001200015.flac"
VOICE2 = FIXTURES / "speechocean762/SPEAKER0036/000360034.flac"
CLIP = FIXTURES / "grid/bbaf2n.mpg"
KINDS = ("image", "audio", "video", "gallery", "audit", "engine")


@dataclass
class Report:
    seed: int
    n: int
    by_kind: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # "accepted", "refused", "FAILED"
    failures: list[str] = field(default_factory=list)
    rows_before: int = 0
    rows_after: int = 0
    audit_before: int = 0
    audit_after: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures and self.rows_before == self.rows_after > 0


class _TracebackCatcher(logging.Handler):
    """Any log record carrying an exception is a traceback shown to the operator."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(f"{record.name}: {record.getMessage()}")


# ----------------------------------------------------------------------------- mutations
def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random damages of the kinds a bad copy or an attacker makes."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        if not b:
            break
        op = int(rng.integers(0, 6))
        i = int(rng.integers(0, len(b)))
        if op == 0:  # truncate
            b = b[: i]
        elif op == 1:  # flip bits
            for j in rng.integers(0, len(b), size=int(rng.integers(1, 32))):
                b[int(j)] ^= 1 << int(rng.integers(0, 8))
        elif op == 2:  # insert random bytes
            b[i:i] = rng.bytes(int(rng.integers(1, 512)))
        elif op == 3:  # zero a run
            n = int(rng.integers(1, 4096))
            b[i:i + n] = bytes(len(b[i:i + n]))
        elif op == 4:  # duplicate a run
            n = int(rng.integers(1, 4096))
            b[i:i] = b[i:i + n]
        else:  # damage the header
            n = min(len(b), int(rng.integers(1, 64)))
            b[:n] = rng.bytes(n)
    return bytes(b)


def crafted_images() -> list[tuple[str, bytes]]:
    def png(w: int, h: int) -> bytes:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        idat = zlib.compress(b"\x00" * 1024)
        return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
                + struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", len(idat)) + b"IDAT"
                + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat)))

    jpeg = FACE.read_bytes()
    sof = next(i for i in range(2, len(jpeg) - 9) if jpeg[i] == 0xFF and jpeg[i + 1] in
               (0xC0, 0xC1, 0xC2))
    big_jpeg = jpeg[:sof + 5] + struct.pack(">HH", 20000, 20000) + jpeg[sof + 9:]
    bmp = b"BM" + bytes(16) + struct.pack("<ii", 20000, -20000) + bytes(64)
    gif = b"GIF89a" + struct.pack("<HH", 20000, 20000) + bytes(32)
    return [("png-20000x20000.png", png(20000, 20000)), ("png-0x0.png", png(0, 0)),
            ("jpeg-20000x20000.jpg", big_jpeg), ("bmp-20000x20000.bmp", bmp),
            ("gif-20000x20000.gif", gif), ("empty.jpg", b""), ("text.jpg", b"hello\n" * 50),
            ("png-magic-only.png", b"\x89PNG\r\n\x1a\n")]


# ------------------------------------------------------------------------------ the site
class Site:
    """A gallery with two people, its key, an audit log with a few decisions, and models."""

    def __init__(self, work: Path, models: Path) -> None:
        from edge_runtime.access.enroll import Enroller
        from edge_runtime.frontend.face import DlibHogDetector
        from edge_runtime.frontend.vad import SpeechGate
        from edge_runtime.models import ModelBundle
        from edge_runtime.store.gallery import Gallery
        from edge_runtime.store.keys import create_key

        self.work, self.models = work, models
        self.gallery, self.key_file = work / "gallery.db", work / "gallery.key"
        self.audit = work / "audit.db"
        self.key = create_key(self.key_file)
        with ModelBundle.load(models) as bundle, Gallery.open(self.gallery, self.key) as g:
            enroller = Enroller(bundle, DlibHogDetector(), SpeechGate("auto"), min_speech_s=0.5)
            enroller.enroll_files(g, "ann", faces=[FACE], voices=[VOICE])
            enroller.enroll_files(g, "bob", faces=[FACE2], voices=[VOICE2])
        self.common = ["--models", str(models), "--gallery", str(self.gallery),
                       "--key-file", str(self.key_file)]
        for face, voice in ((FACE, VOICE), (FACE, VOICE2)):  # a grant and a denial
            self.cli(["run", "--once", "--fast", "--no-status", "--lockout", "0", "--face",
                      str(face), "--voice", str(voice)])
        self.gallery_bytes = self.gallery.read_bytes()
        self.audit_bytes = self.audit.read_bytes()

    def cli(self, args: list[str]) -> int:
        from edge_runtime.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, *self.common])
        if "Traceback" in err.getvalue() or "Traceback" in out.getvalue():
            raise AssertionError(f"traceback printed by edgepin {' '.join(args)}")
        return code

    def rows(self) -> set[tuple]:
        """Every template row, byte for byte (times excluded)."""
        with sqlite3.connect(f"{self.gallery.as_uri()}?mode=ro", uri=True) as raw:
            return set(raw.execute("SELECT name, modality, dim, model_sha256, n_samples, nonce,"
                                   " ciphertext FROM templates"))

    def verify(self) -> tuple[int, int]:
        """(template rows, audit records); raises when the gallery or the log is not intact."""
        from edge_runtime.store.audit import AuditLog
        from edge_runtime.store.gallery import Gallery

        with Gallery.open(self.gallery, self.key, create=False) as g:
            problems = g.problems()
            if problems:
                raise AssertionError(f"gallery integrity: {problems}")
            n_rows = sum(len(e.modalities) for e in g.list())
        with AuditLog.open(self.audit, key=self.key, create=False) as log:
            n_audit = log.verify()
        return n_rows, n_audit


# ------------------------------------------------------------------------------- targets
# Each target returns True when something refused the input with a clear error (an
# EdgepinError, or exit code 2 from a command); any other exception is a fuzz failure.
def _refused(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except EdgepinError:
        return True
    return False


def _image(site: Site, path: Path, i: int) -> bool:
    from edge_runtime.frontend.face import load_image

    refused = _refused(lambda: load_image(path))
    if i % 3 == 0:  # the real command, into the real gallery (refused, or a new fuzz name)
        refused |= site.cli(["enroll", f"fuzz{i}", "--face", str(path)]) == 2
    if i % 3 == 1:
        refused |= site.cli(["run", "--once", "--fast", "--no-status", "--lockout", "0",
                             "--face", str(path), "--voice", str(VOICE)]) == 2
    return refused


def _audio(site: Site, path: Path, i: int) -> bool:
    from edge_runtime.frontend.audio import load_audio

    refused = _refused(lambda: load_audio(path))
    if i % 3 == 0:
        refused |= site.cli(["run", "--once", "--fast", "--no-status", "--lockout", "0",
                             "--face", str(FACE), "--voice", str(path)]) == 2
    if i % 3 == 1:
        refused |= site.cli(["enroll", f"fuzz{i}", "--voice", str(path),
                             "--min-speech", "0.5"]) == 2
    return refused


def _video(site: Site, path: Path, i: int) -> bool:
    from edge_runtime.frontend.video import decode_clip

    refused = _refused(lambda: decode_clip(path, max_frames=25))
    if i % 2 == 0:
        refused |= site.cli(["run", "--once", "--fast", "--no-status", "--lockout", "0",
                             "--replay", str(path)]) == 2
    return refused


def _gallery(site: Site, path: Path, i: int) -> bool:
    from edge_runtime.cli import main
    from edge_runtime.store.gallery import Gallery

    def use() -> None:
        with Gallery.open(path, site.key, create=False) as g:
            g.list()
            g.templates("face", "0" * 64, skip_stale=True)

    refused = _refused(use)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["gallery", "list", "--gallery", str(path), "--key-file",
                     str(site.key_file)])
    return refused or code == 2


def _audit(site: Site, path: Path, i: int) -> bool:
    from edge_runtime.store.audit import AuditLog

    def use() -> None:
        with AuditLog.open(path, key=site.key, create=False) as log:
            log.verify()
            log.tail(5)

    return _refused(use)


def _engine(site: Site, path: Path, i: int) -> bool:
    from edge_runtime.engine_meta import EngineKey, check_engine, read_sidecar

    here = EngineKey("a" * 64, "10.3.0", "Orin", "8.7", "R36.4.0", "int8",
                     {"face": [[1, 3, 112, 112]] * 3})
    return _refused(lambda: read_sidecar(path)) | _refused(lambda: check_engine(path, here))


# --------------------------------------------------------------------------------- run
def inputs(rng: np.random.Generator, n: int, work: Path, site: Site) -> list[tuple[str, Path]]:
    """n seeded inputs, spread over the kinds (crafted headers first)."""
    from edge_runtime.engine_meta import EngineKey, sidecar_path, write_sidecar

    folder = work / "inputs"
    folder.mkdir()
    engine = folder / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    sidecar = write_sidecar(engine, EngineKey("a" * 64, "10.3.0", "Orin", "8.7", "R36.4.0",
                                              "int8", {"face": [[1, 3, 112, 112]] * 3}))
    seeds = {
        "image": [FACE.read_bytes(), FACE2.read_bytes()],
        "audio": [VOICE.read_bytes(), _wav(VOICE)],
        "video": [CLIP.read_bytes()],
        "gallery": [site.gallery_bytes],
        "audit": [site.audit_bytes],
        "engine": [sidecar.read_bytes()],
    }
    ext = {"image": ".jpg", "audio": ".flac", "video": ".mpg", "gallery": ".db",
           "audit": ".db", "engine": ".engine"}
    out: list[tuple[str, Path]] = []
    for name, data in crafted_images():
        p = folder / name
        p.write_bytes(data)
        out.append(("image", p))
    text = folder / "notes.wav"
    text.write_text("not a recording\n" * 100)
    out += [("audio", text), ("gallery", _empty(folder / "empty.db")),
            ("audit", _empty(folder / "empty_audit.db"))]
    i = 0
    while len(out) < n:
        kind = KINDS[i % len(KINDS)]
        base = seeds[kind][int(rng.integers(0, len(seeds[kind])))]
        data = mutate(base, rng)
        if kind == "audio" and base[:4] == b"RIFF":
            suffix = ".wav"
        else:
            suffix = ext[kind]
        sub = folder / f"{len(out):04d}"
        sub.mkdir()
        if kind == "engine":  # an engine file with a damaged sidecar beside it
            p = sub / "model.engine"
            p.write_bytes(rng.bytes(int(rng.integers(0, 256))))
            sidecar_path(p).write_bytes(data)
        else:
            p = sub / f"input{suffix}"
            p.write_bytes(data)
        out.append((kind, p))
        i += 1
    return out[:n] if len(out) > n else out


def _wav(path: Path) -> bytes:
    import soundfile as sf

    from edge_runtime.frontend.audio import load_audio

    buf = io.BytesIO()
    sf.write(buf, load_audio(path)[:48000], 16000, format="WAV")
    return buf.getvalue()


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def run_fuzz(seed: int, n: int, models: Path, work: Path,
             progress: Callable[[int, int], None] | None = None) -> Report:
    """The whole run in ``work`` (a scratch folder); see the module docstring."""
    targets = {"image": _image, "audio": _audio, "video": _video, "gallery": _gallery,
               "audit": _audit, "engine": _engine}
    catcher = _TracebackCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    report = Report(seed, n)
    t0 = time.perf_counter()
    try:
        site = Site(work, models)
        before = site.rows()
        report.rows_before, report.audit_before = site.verify()
        rng = np.random.default_rng(seed)
        cases = inputs(rng, n, work, site)
        for k, (kind, path) in enumerate(cases):
            report.by_kind[kind] += 1
            seen = len(catcher.records)
            try:
                outcome = "refused" if targets[kind](site, path, k) else "accepted"
            except EdgepinError:
                outcome = "refused"
            except Exception:  # noqa: BLE001 - exactly what the fuzz run looks for
                outcome = "FAILED"
                report.failures.append(f"{kind} {path.relative_to(work)}: "
                                       f"{traceback.format_exc(limit=3).splitlines()[-1]}")
            if len(catcher.records) > seen:
                outcome = "FAILED"
                report.failures += [f"{kind} {path.relative_to(work)}: logged traceback {r}"
                                    for r in catcher.records[seen:]]
            report.outcomes[outcome] += 1
            if progress is not None:
                progress(k + 1, len(cases))
        after = site.rows()
        lost = before - after
        if lost:
            report.failures.append(f"{len(lost)} gallery rows present before are gone or changed")
        report.rows_after = len(before & after)
        _, report.audit_after = site.verify()
    finally:
        root.removeHandler(catcher)
    report.seconds = time.perf_counter() - t0
    return report


def markdown(r: Report, models: Path) -> str:
    from benchmarks.machine import markdown_header

    lines = [
        markdown_header("Fuzz run of the device runtime (issue 18)",
                        "mutations of the bundled LFW photos, speechocean762 recordings and "
                        "GRID clip, of a real gallery and audit log made for the run, and of a "
                        "TensorRT engine sidecar, plus crafted oversized headers, text and "
                        "empty files"),
        f"Models: `{models}`; seed {r.seed}; command: "
        f"`python benchmarks/fuzz.py --seed {r.seed} --n {r.n}`.", "",
        "| kind | inputs |", "|---|---|",
        *[f"| {k} | {r.by_kind[k]} |" for k in KINDS],
        f"| **total** | **{sum(r.by_kind.values())}** |", "",
        "| outcome | count |", "|---|---|",
        *[f"| {k} | {r.outcomes[k]} |" for k in ("accepted", "refused", "FAILED")], "",
        "(refused: a one-line error naming the input, or exit code 2; accepted: the damage "
        "left a usable file, or the attempt was a denial)", "",
        f"Gallery rows before/after, unchanged: {r.rows_before} / {r.rows_after}; manifest "
        f"verified before and after with no quarantine. Audit records before/after: "
        f"{r.audit_before} / {r.audit_after} (the fuzzed `run` attempts append), keyed chain "
        f"and head anchor verified before and after.", "",
        f"Result: **{'PASS' if r.passed else 'FAIL'}** in {r.seconds:.0f} s.",
    ]
    if r.failures:
        lines += ["", "Failures:", *[f"- {f}" for f in r.failures[:50]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=18, help="fixes every input")
    parser.add_argument("--n", type=int, default=240, help="number of malformed inputs")
    parser.add_argument("--models", type=Path, default=ROOT / "models",
                        help="models folder with manifest.json")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from rich.progress import Progress

    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        with Progress() as bar:
            task = bar.add_task("fuzz", total=args.n)
            report = run_fuzz(args.seed, args.n, args.models, work,
                              progress=lambda k, total: bar.update(task, completed=k))
    text = markdown(report, args.models)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
