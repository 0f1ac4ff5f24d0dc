"""`edgepin run`: wire a capture source, the models, the gallery, the audit log and an
actuator into the access-control loop, and report each decision (text or one JSON object).

A setup failure (bad clip, missing models, stale operating points or engine, no key) is a
one-line error; with ``--json`` it is also printed as a denial object carrying that reason,
so a script always reads one decision.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge_runtime.errors import ConfigError, EdgepinError


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
    from edge_runtime.cli.options import mic_device

    return open_live(args.camera, mic_device(args.mic)), False


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


def _line(result: Any) -> str:
    verdict = f"GRANTED {result.identity}" if result.granted else "DENIED"
    scores = " ".join(f"{k} {v:.2f}" for k, v in result.scores.items() if v is not None)
    ms = result.latencies_ms.get("decision")
    tail = f" [{ms:.0f} ms]" if ms is not None else ""
    return f"{verdict}: {result.reason}" + (f" ({scores})" if scores else "") + tail


def run_command(args: argparse.Namespace) -> int:
    from edge_runtime.access.loop import AccessLoop, LoopConfig
    from edge_runtime.access.pipeline import PipelineConfig, Verifier, denial
    from edge_runtime.access.status_line import StatusLine
    from edge_runtime.cli.options import gallery_path, model_bundle
    from edge_runtime.frontend.face import DlibHogDetector
    from edge_runtime.frontend.vad import SpeechGate
    from edge_runtime.store.audit import AuditLog
    from edge_runtime.store.gallery_handle import GalleryHandle, default_audit, resolve_key

    path = gallery_path(args)
    audit_path = args.audit if args.audit is not None else default_audit(path)
    opened: list[Any] = []
    audit = None
    try:
        try:
            try:
                audit_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create {audit_path.parent}: {exc.strerror}") from exc
            audit = AuditLog.open(audit_path)
            opened.append(audit)
            source, finite = build_source(args)
            key = resolve_key(args.key_file, path)
            bundle = model_bundle(args)
            opened.append(bundle)
            gallery = GalleryHandle(path, key)
            opened.append(gallery)
            min_speech = args.min_speech if args.min_speech is not None else (0.5 if finite else 2.0)
            verifier = Verifier(
                bundle, gallery,
                PipelineConfig(face_policy=args.face_policy, min_speech_s=min_speech,
                               missing_modality=args.missing_modality,
                               target_far=args.target_far, mode=getattr(args, "mode", None)),
                DlibHogDetector(), SpeechGate("auto"))
            opened.append(verifier)
            actuator = _actuator(args)
        except EdgepinError as exc:
            if audit is not None:
                from edge_runtime.store.audit import AuditRecord

                try:
                    audit.append(AuditRecord("denied", reason=" ".join(str(exc).split()),
                                             source="edgepin run setup"))
                except EdgepinError:
                    pass
            if args.json:
                print(json.dumps(denial(str(exc), source="edgepin run setup").to_json()))
                print(f"edgepin run: error: {exc}", file=sys.stderr)
                return 2
            raise
        status = None if args.no_status or args.json else StatusLine()
        if status is not None:
            opened.append(status)
        notes = list(bundle.notes)
        if finite:
            notes.append(f"replayed file: deciding when it ends, with >= {min_speech:g} s of "
                         f"voiced speech required" + ("" if args.fast else " (real-time pace)"))
        if not args.json:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)

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
                       decide_at_end=finite),
            audit=audit, actuator=actuator, status=status, on_decision=report)
        results = loop.run(source, once=args.once)
    finally:
        for thing in reversed(opened):
            thing.close()
    if loop.start_error is not None:
        if not args.json:
            print(f"edgepin run: error: {loop.start_error}", file=sys.stderr)
        return 2
    if args.once:
        return 0 if results and results[0].granted else 1
    return 0
