"""Device subcommands: `enroll`, `gallery list|remove|export|seal`, `audit verify|rotate`,
`run`, `demo`, `bench`.

Cheap to import (the CLI parser is built on every `edgepin` call): the runtime modules load
inside the handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from edge_runtime.cli.options import (
    gallery_path,
    mic_device,
    model_bundle,
    single_thread_blas,
)
from edge_runtime.errors import ConfigError, EdgepinError


# ------------------------------------------------------------------------------ options
def _models_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    p.add_argument("--models", type=Path, default=None,
                   help="models folder with manifest.json (default: models/ of this checkout)")
    p.add_argument("--precision", choices=("auto", "fp32", "int8", "fp16"), default="auto",
                   help="model files to run (and the operating-point file made for them). "
                   "auto: int8 on TensorRT when the INT8 models are there; on onnxruntime "
                   "what `edgepin info` says for this CPU (int8 dot-product support, measured "
                   "CPU INT8 models), else fp32. fp16: TensorRT only (the FP16 engine of the "
                   "FP32 model)")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                   help="inference backend (tensorrt needs engines built on this device)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--face-tier", choices=("auto", "student", "large"), default="auto",
                   help="face model: the distilled student (112 grey crop), or dlib's face "
                        "ResNet as ONNX (face_large: 150x150 RGB dlib chip; teacher-grade, "
                        "its own heads and operating points). auto: the models folder's "
                        "default_face_tier for this backend (docs/dlib_port.md)")
    p.add_argument("--voice-tier", choices=("student", "large"), default="student",
                   help="voice model: the distilled student (2 s log-mel windows), or "
                        "Resemblyzer's GE2E encoder as ONNX (voice_large, made by `edgepin "
                        "port-resemblyzer`; whole utterances, FP32 on onnxruntime at every "
                        "precision and backend, no cross-modal heads yet, its own operating "
                        "points and galleries)")
    p.add_argument("--detector", choices=("auto", "cnn", "hog"), default="auto",
                   help="face detector: dlib's CNN as a network, dlib HOG, or auto (the CNN on "
                        "TensorRT, else the faster of the two measured at start; default: %(default)s)")
    if not demo:
        p.add_argument("--engines", type=Path, default=None,
                       help="folder of the export's TensorRT engines, searched by their "
                       "sidecars (default: MODELS/tensorrt)")
        p.add_argument("--operating-points", type=Path, default=None,
                       help="default: MODELS/operating_points.yaml when it exists")
    p.add_argument("--threshold", action="append", metavar="NAME=VALUE",
                   help="override a PROVISIONAL threshold (face, voice, pin, faa); repeatable")


def _gallery_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", type=Path, default=None,
                   help="gallery file (default: ~/.local/share/edgepin/gallery.db, or "
                        "$EDGEPIN_HOME/gallery.db)")
    p.add_argument("--key-file", type=Path, default=None,
                   help="gallery key (default: $EDGEPIN_GALLERY_KEY, else gallery.key next to "
                        "the gallery); it also keys the manifest and the audit chain")


def _capture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", metavar="URI", help="0, /dev/video0, csi://0, rtsp://..., file")
    p.add_argument("--mic", metavar="DEVICE", default=None, help="sounddevice input index/name")
    p.add_argument("--face-policy", choices=("largest", "centre", "deny"), default="largest",
                   help="several faces in view: use the largest / most central, or deny")


# ------------------------------------------------------------------------------ enroll
def _enroll(args: argparse.Namespace) -> int:
    single_thread_blas()
    from edge_runtime.access.enroll import Enroller
    from edge_runtime.cli.options import face_detector
    from edge_runtime.frontend.vad import SpeechGate
    from edge_runtime.store.gallery import Gallery
    from edge_runtime.store.gallery_handle import resolve_key

    live = args.camera is not None
    if live and (args.face or args.voice or args.video):
        raise ConfigError("enrol either live (--camera/--mic) or from files, not both")
    if not live and not (args.face or args.voice or args.video):
        raise ConfigError("give --face IMG, --voice WAV or --video CLIP (or --camera for live)")
    path = gallery_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = resolve_key(args.key_file, path, create=args.create_key)
    with model_bundle(args) as bundle, Gallery.open(path, key) as gallery:
        enrolled = {e.name: e for e in gallery.list()}.get(args.name)
        if enrolled is not None and not args.replace:
            raise ConfigError(
                f"{args.name!r} is already enrolled in {path} ({', '.join(enrolled.modalities)});"
                " pass --replace to replace the whole record (all its modalities), or enrol "
                "under another name")
        enroller = Enroller(bundle, face_detector(args), SpeechGate("auto"),
                            face_policy=args.face_policy, min_speech_s=args.min_speech)
        # --replace drops the old record in the same transaction as the new one is written:
        # a record never mixes the face of one enrolment with the voice of another
        with gallery.batch() if enrolled is not None else contextlib.nullcontext():
            if enrolled is not None:
                gallery.remove(args.name)
            if live:
                from edge_runtime.capture import open_live

                source = open_live(args.camera, mic_device(args.mic))
                result = enroller.enroll_live(gallery, args.name, source,
                                              prompt=lambda m: print(m, flush=True),
                                              replace=True)
            else:
                result = enroller.enroll_files(gallery, args.name, faces=args.face or (),
                                               voices=args.voice or (),
                                               videos=args.video or (), replace=True)
    for s in result.samples:
        if not s.ok:
            print(f"refused {s.modality} sample: {s.reason}", file=sys.stderr)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{result.summary()} (gallery {path})")
    return 0


# ----------------------------------------------------------------------------- gallery
def _gallery(args: argparse.Namespace) -> int:
    from edge_runtime.store.gallery import Gallery
    from edge_runtime.store.gallery_handle import resolve_key

    path = gallery_path(args)
    key = resolve_key(args.key_file, path)
    if args.gallery_command == "seal":
        n = Gallery.seal(path, key)
        print(f"sealed {path}: {n} template rows recorded as trusted in its integrity manifest")
        return 0
    with Gallery.open(path, key, create=False) as gallery:
        if args.gallery_command == "list":
            entries = gallery.list()
            if args.json:
                print(json.dumps([{"name": e.name, "modalities": list(e.modalities),
                                   "n_samples": dict(e.n_samples), "created": e.created,
                                   "updated": e.updated, "quarantined": e.quarantined}
                                  for e in entries], indent=2))
            else:
                for e in entries:
                    mods = ", ".join(f"{m} ({e.n_samples[m] or '?'})" for m in e.modalities)
                    flag = f"\tQUARANTINED: {e.quarantined}" if e.quarantined else ""
                    print(f"{e.name}\t{mods}\tupdated {e.updated}{flag}")
                print(f"{len(entries)} identities in {path}")
            for problem in gallery.problems():
                print(f"gallery integrity: {problem}", file=sys.stderr)
        elif args.gallery_command == "remove":
            if not gallery.remove(args.name):
                raise ConfigError(f"{args.name!r} is not enrolled in {path}")
            print(f"removed {args.name} from {path}")
        else:
            from edge_runtime.store.gallery_handle import KEY_FILE, default_audit
            from edge_runtime.store.integrity import anchor_path

            audit = default_audit(path)
            protected = (path.with_name(KEY_FILE), audit, anchor_path(audit),
                         Path(f"{audit}-wal"), Path(f"{audit}-shm"))
            if args.key_file is not None:
                protected += (args.key_file,)
            gallery.export(args.out, include_templates=args.include_templates,
                           overwrite=args.force, protected=protected)
            print(f"exported {gallery.count()} identities to {args.out}")
    return 0


# ------------------------------------------------------------------------------- audit
def _audit(args: argparse.Namespace) -> int:
    from edge_runtime.store.audit import AuditLog, rotate
    from edge_runtime.store.gallery_handle import default_audit, resolve_key

    path = gallery_path(args)
    audit_path = args.audit if args.audit is not None else default_audit(path)
    if args.audit_command == "rotate":
        try:
            key = resolve_key(args.key_file, path)
        except EdgepinError:
            key = None  # an unkeyed (old) log can be rotated without the key
        target, n, check = rotate(audit_path, key)
        print(f"audit log {audit_path} ({n} records, {check}) set aside as {target}; a new "
              "keyed log starts at the next decision")
        return 0
    key = resolve_key(args.key_file, path)
    with AuditLog.open(audit_path, key=key, create=False) as log:
        n = log.verify()
    print(f"audit log {audit_path}: {n} records, keyed chain and head anchor verified")
    return 0


# --------------------------------------------------------------------------------- run
def _run(args: argparse.Namespace) -> int:
    single_thread_blas()
    from edge_runtime.cli.run import run_command

    return run_command(args)


def _demo(args: argparse.Namespace) -> int:
    single_thread_blas()
    from edge_runtime.cli.demo import print_report, run_demo
    from edge_runtime.cli.options import default_models_dir, resolve_face_tier, resolve_precision
    from edge_runtime.models import parse_threshold_overrides

    models = Path(args.models) if args.models is not None else default_models_dir()
    tier = resolve_face_tier(args.face_tier, args.backend, models)
    report = run_demo(args.models, args.clips, people=args.people,
                      mixed_per_person=args.mixed, realtime=args.realtime,
                      min_speech_s=args.min_speech,
                      precision=resolve_precision(args.precision, args.backend, models, tier,
                                                  args.voice_tier),
                      backend=args.backend, threads=args.threads,
                      threshold_overrides=parse_threshold_overrides(args.threshold),
                      detector=args.detector, door=args.door,
                      face_tier=tier, voice_tier=args.voice_tier)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    return 0


def _bench(args: argparse.Namespace) -> int:
    single_thread_blas()
    from edge_runtime.cli.bench import print_summary, run_bench

    report = run_bench(args.models, runs=args.runs, warmup=args.warmup, clip=args.clip,
                       out_dir=args.out, teachers=not args.no_teachers,
                       gallery_sizes=tuple(args.gallery_sizes), threads=args.threads,
                       face_tiers=("student", "large") if args.face_tier == "all"
                       else (args.face_tier,))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_summary(report)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the runtime commands to the `edgepin` parser."""
    p = subparsers.add_parser("enroll", help="enrol a person from files or live capture")
    p.add_argument("name", help="identity name to store the templates under")
    p.add_argument("--face", nargs="+", metavar="IMG", help="face photos")
    p.add_argument("--voice", nargs="+", metavar="WAV",
                   help="voice recordings (WAV/FLAC, or any audio/video file with sound); all "
                        "are used: give about 15 s of speech in all (a warning says when "
                        "there is less; live enrolment asks until it has heard 15 s)")
    p.add_argument("--video", nargs="+", metavar="CLIP", help="talking-face clips (both)")
    p.add_argument("--create-key", action="store_true",
                   help="create the gallery key file (0600) for a NEW gallery; refused when "
                        "the gallery already exists")
    p.add_argument("--replace", action="store_true",
                   help="NAME is enrolled already: replace the whole record (every modality)")
    p.add_argument("--no-replace", action="store_true",
                   help="(the default now) refuse if NAME is enrolled")
    p.add_argument("--min-speech", type=float, default=1.0, help="voiced seconds per recording")
    _capture_options(p)
    _gallery_options(p)
    _models_options(p)
    p.set_defaults(handler=_enroll)

    p = subparsers.add_parser("gallery", help="list, remove or export enrolled people")
    sub = p.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="enrolled identities (no biometric data)")
    q.add_argument("--json", action="store_true", help="print a JSON list")
    _gallery_options(q)
    q = sub.add_parser("remove", help="delete every template of NAME")
    q.add_argument("name", help="identity to delete")
    _gallery_options(q)
    q = sub.add_parser("export", help="JSON inventory (templates stay encrypted)")
    q.add_argument("out", type=Path, help="new JSON file (an existing one needs --force)")
    q.add_argument("--include-templates", action="store_true",
                   help="add the encrypted template blobs (still unreadable without the key)")
    q.add_argument("--force", action="store_true",
                   help="replace an existing export (never the gallery, key, anchor or log)")
    _gallery_options(q)
    q = sub.add_parser("seal", help="record the current rows as trusted (one-time upgrade of "
                                    "a gallery made before integrity manifests)")
    _gallery_options(q)
    for q in sub.choices.values():
        q.set_defaults(handler=_gallery)

    p = subparsers.add_parser("audit", help="verify or rotate the audit log")
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    sub.add_parser("verify", help="check the keyed chain and its head anchor")
    sub.add_parser("rotate", help="set the log aside under a dated name (also the one-time "
                                  "upgrade of an unkeyed log)")
    for q in sub.choices.values():
        q.add_argument("--audit", type=Path, default=None,
                       help="audit log (default: audit.db next to the gallery)")
        _gallery_options(q)
        q.set_defaults(handler=_audit)

    p = subparsers.add_parser("run", help="the access-control loop (camera+mic or replay)")
    _capture_options(p)
    p.add_argument("--replay", metavar="CLIP", help="replay a talking-face clip")
    p.add_argument("--face", metavar="IMG", help="with --voice: a photo + a recording")
    p.add_argument("--voice", metavar="WAV", help="with --face: a voice recording")
    p.add_argument("--fast", action="store_true", help="replay as fast as possible")
    p.add_argument("--once", action="store_true",
                   help="one attempt, then exit (0 granted, 1 denied, 2 start-up error, 3 "
                        "granted but the actuator failed); live devices are retried 3 times")
    p.add_argument("--json", action="store_true", help="print each decision as one JSON object")
    p.add_argument("--min-speech", type=float, default=None,
                   help="voiced seconds needed (live source: default and minimum the security "
                        "mode's decisive speech, 3 s as shipped; replayed files: default 0.5)")
    p.add_argument("--target-far", type=float, default=1e-2,
                   help="operating point to decide at (must be measured in the operating-point file)")
    p.add_argument("--mode", choices=("face+liveness", "two-factor"), default=None,
                   help="security mode of the operating-point file (default: the file's)")
    p.add_argument("--missing-modality", choices=("deny", "single"), default="deny",
                   help="no usable face or voice: deny, or decide on the one present "
                        "('single' needs --unsafe-no-liveness)")
    p.add_argument("--unsafe-no-liveness", action="store_true",
                   help="accept that --missing-modality single grants with no liveness check "
                        "(a still photo passes); decisions and audit rows say UNSAFE")
    p.add_argument("--cooldown", type=float, default=3.0,
                   help="seconds after a decision before the next attempt starts")
    p.add_argument("--lockout", type=int, default=5,
                   help="failed verifications that lock the door (0: never); counted from the "
                        "audit log, so they hold across restarts and --once runs")
    p.add_argument("--lockout-window", type=float, default=60.0,
                   help="seconds in which --lockout failures must fall to lock")
    p.add_argument("--lockout-time", type=float, default=60.0,
                   help="seconds the door stays locked after a lockout")
    p.add_argument("--actuator-cmd", metavar="CMD",
                   help="run on grant (no shell); must be found at start-up")
    p.add_argument("--actuator-url", metavar="URL",
                   help="POST the grant as JSON to URL; the host must answer at start-up")
    p.add_argument("--actuator-gpio", metavar="MODULE:FUNC",
                   help="call FUNC(True) to open, FUNC(False) to lock; locked at start-up "
                        "and on every exit")
    p.add_argument("--audit", type=Path, default=None, help="default: audit.db by the gallery")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    p.add_argument("--roi-rescan", type=int, default=None, metavar="N",
                   help="track the face: search a region around it, the full frame at least "
                        "every N frames and whenever the region finds no face or two faces "
                        "are in view (docs/dlib_port.md); default: every frame in full")
    _gallery_options(p)
    _models_options(p)
    p.set_defaults(handler=_run)

    p = subparsers.add_parser("demo", help="enrol the bundled GRID people and replay attempts")
    p.add_argument("--clips", type=Path, default=None, help="default: tests/fixtures/grid")
    p.add_argument("--people", type=int, default=None, help="use the first N clips")
    p.add_argument("--mixed", type=int, default=1, help="mixed attacks per person")
    p.add_argument("--realtime", action="store_true", help="replay at real-time pace")
    p.add_argument("--min-speech", type=float, default=0.5,
                   help="voiced seconds needed per attempt")
    p.add_argument("--door", type=Path, default=None, metavar="DATA",
                   help="also a door of ARTIFICIAL identities from DATA/{lfw,speechocean762}")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _models_options(p, demo=True)
    # the demo's figures must not depend on a start-up timing race between detectors (auto
    # picks the CNN on GRID's small frames, HOG on 640x480), and the AV-sync threshold in the
    # operating-point files was measured on HOG landmarks (benchmarks/avsync.md)
    p.set_defaults(handler=_demo, detector="hog")

    p = subparsers.add_parser("bench", help="per-stage and end-to-end latency")
    p.add_argument("--models", type=Path, default=None,
                   help="models folder with manifest.json (default: models/ of this checkout)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per stage")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (caches, JIT)")
    p.add_argument("--clip", type=Path, default=None, help="default: a bundled GRID clip")
    p.add_argument("--out", type=Path, default=None,
                   help="write bench.md + bench.json + bench.png here")
    p.add_argument("--gallery-sizes", type=int, nargs="+", default=[1, 100, 1000, 10000],
                   help="gallery sizes to time the search at")
    p.add_argument("--no-teachers", action="store_true",
                   help="skip timing the teachers (dlib, Resemblyzer)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--face-tier", choices=("all", "student", "large"), default="all",
                   help="face tiers to time (all: the student and, when the manifest has "
                        "face_large, the large tier)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_bench)
