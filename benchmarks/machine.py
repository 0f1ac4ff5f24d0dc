"""Machine, versions and date for every benchmark table (results without them are not comparable)."""

from __future__ import annotations

import datetime as dt
import os
import platform

from edge_runtime.sysinfo import cpu_identity, dist_version


def _version(name: str) -> str:
    return dist_version(name) or "absent"


def machine_info() -> dict[str, str]:
    """CPU model, core count, memory, OS, Python and the inference library versions."""
    cpu, _ = cpu_identity()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "dlib": _version("dlib-bin"),
    }


def markdown_header(title: str, data: str) -> str:
    """The standard preamble of a committed results table."""
    m = machine_info()
    lines = [f"# {title}", "", f"- date: {m['date']}", f"- machine: {m['cpu']}, {m['memory']}, {m['os']}",
             f"- software: Python {m['python']}, onnxruntime {m['onnxruntime']}, torch {m['torch']}, "
             f"numpy {m['numpy']}, dlib {m['dlib']}", f"- data: {data}", ""]
    return "\n".join(lines)
