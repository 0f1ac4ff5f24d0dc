"""`edgepin run`: wire a capture source, the models, the gallery, the audit log and an
actuator into the access-control loop, and report each decision (text or one JSON object).

Everything that can be wrong before the first person arrives is checked at start-up: the key,
the gallery (and its integrity manifest), the audit log's keyed chain, the devices, the model
files, the operating point at ``--target-far``, the actuator. Such a failure is a start-up
error: one line on stderr, exit code 2 and no audit row (nobody attempted anything); with
``--json`` a denial object carrying the reason is printed too, so a script always reads one.

The door is fail-secure: the actuator is locked at start-up and again on every exit path
(normal end after the running pulse, exception, SIGINT, SIGTERM).
Exit codes with ``--once``: 0 granted, 1 denied, 2 start-up error, 3 granted but the actuator
failed (the door did not open).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edge_runtime.errors import ConfigError, EdgepinError

ONCE_RETRIES = 3  # --once: a device that cannot be (re)opened this many times ends the attempt


def build_source(args: argparse.Namespace) -> tuple[Any, bool]:
    """(source, finite) from --camera/--mic, --replay, or --face + --voice."""
    from edge_runtime.capture import ReplaySource, open_live

    chosen = [n for n, v in (("--camera", args.camera), ("--replay", args.replay),
                             ("--face/--voice", args.face or args.voice)) if v]
    if len(chosen) != 1:
        raise ConfigError("give exactly one source: --camera URI [--mic DEVICE], --replay "
                          f"CLIP, or --face IMG --voice WAV (got {', '.join(chosen) or 'none'})")
    realtime = not args.fast
    if args.replay:
        return ReplaySource.open(args.replay, realtime=realtime), True
    if args.face or args.voice:
        if not (args.face and args.voice):
            raise ConfigError("--face and --voice go together (a photo and a recording)")
        # a still photo: 5 identical frames a second are as good as 25, at a fifth the work
        return ReplaySource.from_image_audio(args.face, args.voice, fps=5.0,
                                             realtime=realtime), True
    from edge_runtime.capture.base import BackoffPolicy
    from edge_runtime.cli.options import mic_device, quiet_opencv

    quiet_opencv()  # its own warnings would flood a log; reconnects are logged one line each
    backoff = BackoffPolicy(initial=0.5, cap=2.0, max_retries=ONCE_RETRIES) if args.once \
        else None
    return open_live(args.camera, mic_device(args.mic), backoff=backoff), False


def _actuator(args: argparse.Namespace) -> Any:
    from edge_runtime.access.actuators import CommandActuator, GpioActuator, HttpActuator

    given = [a for a in (args.actuator_cmd, args.actuator_url, args.actuator_gpio) if a]
    if len(given) > 1:
        raise ConfigError("choose one actuator: --actuator-cmd, --actuator-url or --actuator-gpio")
    if args.actuator_cmd:
        return CommandActuator(args.actuator_cmd)
    if args.actuator_url:
        return HttpActuator(args.actuator_url)
    if args.actuator_gpio:
        from edge_runtime.cli.options import import_function

        return GpioActuator(import_function(args.actuator_gpio))
    return None


def _check_target_far(bundle: Any, args: argparse.Namespace) -> None:
    """The operating point must exist for every subset the loop may decide on."""
    op = bundle.operating_points
    if op is None:
        return
    cross = {m: 0.5 for m in bundle.cross_modal if m in op.fuser.calibrations}
    subsets = [{"face": 0.5, "voice": 0.5, **cross}]
    if args.missing_modality == "single":
        subsets += [{"face": 0.5}, {"voice": 0.5}]
    for scores in subsets:
        try:
            op.decide(scores, args.target_far)
        except ConfigError as exc:
            raise ConfigError(f"--target-far {args.target_far:g} cannot be used: {exc}") from exc


def _line(result: Any) -> str:
    verdict = f"GRANTED {result.identity}" if result.granted else "DENIED"
    scores = " ".join(f"{k} {v:.2f}" for k, v in result.scores.items() if v is not None)
    ms = result.latencies_ms.get("decision")
    tail = f" [{ms:.0f} ms]" if ms is not None else ""
    return f"{verdict}: {result.reason}" + (f" ({scores})" if scores else "") + tail


@contextmanager
def _signals_end_the_run() -> Iterator[None]:
    """SIGTERM (systemd stop, docker stop) unwinds like Ctrl-C, so every `finally` runs and
    the door is locked; the default action would kill the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _min_speech(args: argparse.Namespace, bundle: Any, finite: bool) -> float:
    """Voiced seconds an attempt needs before it is decided. A replayed file is decided on
    what it holds (0.5 s). A live source needs the security mode's decisive speech (3 s as
    shipped): below it a short phrase would be judged where the voice veto is loosest, and
    an informed attacker who says one word would pass as often as the looser veto lets them
    (benchmarks/attacks.md, "short speech"). ``--min-speech`` may raise it, not lower it."""
    from edge_runtime.access.collector import live_min_speech_s

    if finite:
        return args.min_speech if args.min_speech is not None else 0.5
    op = bundle.operating_points
    mode = op.mode(getattr(args, "mode", None)) if op is not None and op.modes else None
    floor = mode.decisive_speech_s if mode is not None else 0.0
    if args.min_speech is None:
        return live_min_speech_s(floor)
    if args.min_speech < floor:
        raise ConfigError(
            f"--min-speech {args.min_speech:g}: a live source needs at least the decisive speech "
            f"of security mode {mode.name} ({floor:g} s, in {op.source}); a grant on less speech "
            "judges the voice where its veto is loosest")
    return args.min_speech


def _start_error(exc: EdgepinError, args: argparse.Namespace) -> int:
    from edge_runtime.access.pipeline import denial

    if args.json:
        print(json.dumps(denial(" ".join(str(exc).split()),
                                source="edgepin run start-up").to_json()))
    print(f"edgepin run: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    from edge_runtime.access.actuators import check_actuator, close_actuator
    from edge_runtime.access.face_tier import check_gallery_tier
    from edge_runtime.access.loop import AccessLoop, LoopConfig
    from edge_runtime.access.pipeline import PipelineConfig, Verifier
    from edge_runtime.access.status_line import StatusLine
    from edge_runtime.cli.options import face_detector, gallery_path, model_bundle
    from edge_runtime.frontend.vad import SpeechGate
    from edge_runtime.store.audit import AuditLog
    from edge_runtime.store.gallery_handle import GalleryHandle, default_audit, resolve_key

    path = gallery_path(args)
    audit_path = args.audit if args.audit is not None else default_audit(path)
    opened: list[Any] = []
    actuator = None
    clean = False
    with _signals_end_the_run():
        try:
            try:  # start-up: nothing here writes an audit row
                if args.missing_modality != "deny" and not args.unsafe_no_liveness:
                    raise ConfigError(
                        f"--missing-modality {args.missing_modality} decides on one modality "
                        "with no liveness check (a still photo of an enrolled face passes): "
                        "add --unsafe-no-liveness to accept that risk explicitly")
                key = resolve_key(args.key_file, path)
                gallery = GalleryHandle(path, key)
                opened.append(gallery)
                problems = gallery.get().problems()  # opens it: key, manifest, anchor
                try:
                    audit_path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create {audit_path.parent}: {exc.strerror}") from exc
                audit = AuditLog.open(audit_path, key=key)
                opened.append(audit)
                n_audit = audit.verify()
                source, finite = build_source(args)
                bundle = model_bundle(args)
                opened.append(bundle)
                check_gallery_tier(gallery.get(), bundle)
                _check_target_far(bundle, args)
                min_speech = _min_speech(args, bundle, finite)
                verifier = Verifier(
                    bundle, gallery,
                    PipelineConfig(face_policy=args.face_policy, min_speech_s=min_speech,
                                   missing_modality=args.missing_modality,
                                   target_far=args.target_far,
                                   mode=getattr(args, "mode", None)),
                    face_detector(args), SpeechGate("auto"))
                opened.append(verifier)
                actuator = _actuator(args)
                check_actuator(actuator)  # GPIO: the door is locked from here on
                status = None if args.no_status or args.json else StatusLine()
                if status is not None:
                    opened.append(status)

                def report(result: Any) -> None:
                    if args.json:
                        print(json.dumps(result.to_json()), flush=True)
                    elif status is not None:
                        status.print(_line(result))
                    else:
                        print(_line(result), flush=True)

                loop = AccessLoop(
                    verifier,
                    LoopConfig(cooldown_s=args.cooldown, lockout_failures=args.lockout,
                               lockout_window_s=args.lockout_window, lockout_s=args.lockout_time,
                               decide_at_end=finite,
                               unsafe_no_liveness=args.unsafe_no_liveness),
                    audit=audit, actuator=actuator, status=status, on_decision=report)
            except EdgepinError as exc:
                return _start_error(exc, args)
            notes = list(bundle.notes)
            notes.append(f"audit log {audit_path}: {n_audit} records, keyed chain verified")
            notes += [f"gallery integrity: {p}" for p in problems]
            if finite:
                notes.append(f"replayed file: deciding when it ends, with >= {min_speech:g} s "
                             "of voiced speech required" + ("" if args.fast else
                                                            " (real-time pace)"))
            if args.unsafe_no_liveness:  # always said, even with --json (stderr)
                print("edgepin run: WARNING: UNSAFE mode (--unsafe-no-liveness): an attempt "
                      "with one modality is decided on it alone, with no liveness check; a "
                      "still photo can be granted", file=sys.stderr)
            if not args.json:
                for note in notes:
                    print(f"note: {note}", file=sys.stderr)
            results = loop.run(source, once=args.once)
            clean = True
        finally:
            if actuator is not None:
                try:
                    close_actuator(actuator, wait=clean)
                except EdgepinError as exc:
                    print(f"edgepin run: error: {exc}", file=sys.stderr)
            for thing in reversed(opened):
                thing.close()
    if loop.start_error is not None:
        return _start_error(EdgepinError(loop.start_error), args)
    if args.once:
        if not results or not results[0].granted:
            return 1
        return 3 if results[0].actuator not in ("", "ok", None) else 0
    return 0
