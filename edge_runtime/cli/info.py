"""`edgepin info`: what this machine can run (no torch)."""

from __future__ import annotations

import argparse
import json


def _info(args: argparse.Namespace) -> int:
    from edge_runtime import sysinfo
    from edge_runtime.cli.options import default_models_dir
    from edge_runtime.cpu_int8 import choose

    report = {**sysinfo.collect(), "cpu_int8": choose(default_models_dir())}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    def yes(flag: bool) -> str:
        return "[green]yes[/]" if flag else "[red]no[/]"

    def shown(version: str | None) -> str:
        """A device install has no training packages: say so instead of 'None'."""
        return version or "not installed (training only)"

    b = report["backends"]
    table = Table(title=f"edgepin {report['edgepin']}", show_header=True)
    table.add_column("component")
    table.add_column("usable")
    table.add_column("details")
    table.add_row("python", yes(True), f"{report['python']} on {report['platform']}")
    table.add_row("jetpack", yes(bool(report["jetpack"])), report["jetpack"] or "not a Jetson")
    ort = b["onnxruntime"]
    table.add_row("onnxruntime", yes(ort["available"]),
                  f"{ort['version']}: {', '.join(ort['providers'])}" if ort["available"]
                  else ort["reason"])
    trt = b["tensorrt"]
    table.add_row("tensorrt", yes(trt["available"]), trt.get("version") or trt["reason"])
    cuda = b["cuda"]
    table.add_row("cuda", yes(cuda["available"]),
                  f"runtime {cuda['runtime']}, {cuda['devices']} device(s)" if "runtime" in cuda
                  else cuda["reason"])
    cv = report["opencv"]
    table.add_row("opencv", yes(cv["available"]),
                  f"{cv['version']}, GStreamer {'yes' if cv['gstreamer'] else 'no (csi:// unavailable)'}"
                  if cv["available"] else cv["reason"])
    audio = report["audio"]
    table.add_row("microphone", yes(audio["available"]),
                  "; ".join(f"[{d['index']}] {d['name']}" for d in audio["inputs"])
                  or audio["reason"])
    cam = report["camera"]
    table.add_row("camera (V4L2)", yes(bool(cam["v4l2"])), ", ".join(cam["v4l2"]) or cam["reason"])
    vad = report["vad"]
    table.add_row("VAD", yes(bool(vad["silero_onnx"] or vad["webrtcvad"])),
                  f"silero onnx: {'yes' if vad['silero_onnx'] else 'no'}, "
                  f"webrtcvad: {'yes' if vad['webrtcvad'] else 'no'}")
    face, voice = report["teachers"]["face"], report["teachers"]["voice"]
    table.add_row("face teacher", yes(face["installed"]), f"dlib {shown(face['dlib'])}")
    table.add_row("voice teacher", yes(voice["installed"]),
                  f"resemblyzer {shown(voice['resemblyzer'])}, torch {shown(voice['torch'])}")
    c8 = report["cpu_int8"]
    table.add_row("CPU precision (auto)", yes(c8["precision"] == "int8"),
                  f"{c8['precision']}: {c8['reason']}")
    Console().print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `info` to the `edgepin` parser."""
    p = subparsers.add_parser("info", help="what this machine can run (backends, camera, audio)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_info)
