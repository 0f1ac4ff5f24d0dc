"""The operator's live status line: state, last decision, per-stage latency, device health.

Drawn with rich on a terminal and refreshed at most ``max_hz`` times a second (redrawing on
every poll would cost more CPU than the VAD); off when stdout is not a terminal (a service,
``--json``), where the audit log and the decision lines carry the same information.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from edge_runtime.access.pipeline import AttemptResult
from edge_runtime.capture.base import Status

_STAGES = ("detect_mean", "vad_total", "face_embed_capture_mean", "voice_embed", "search",
           "decision")


def render(state: str, last: AttemptResult | None, devices: Mapping[str, Status],
           speech_s: float = 0.0) -> str:
    """The line as plain text (rich markup-free, so it is testable and loggable)."""
    parts = [f"state: {state}"]
    if state.split(":")[0] in ("person present", "collecting"):  # "collecting: keep speaking"
        parts[0] += f" (speech {speech_s:.1f} s)"
    if last is not None:
        verdict = f"GRANTED {last.identity}" if last.granted else "DENIED"
        scores = " ".join(f"{k} {v:.2f}" for k, v in last.scores.items() if v is not None)
        parts.append(f"last: {verdict}" + (f" ({scores})" if scores else "")
                     + (f" [{last.mode}]" if last.mode else ""))
        lat = " ".join(f"{k.split('_')[0]} {last.latencies_ms[k]:.0f}" for k in _STAGES
                       if k in last.latencies_ms)
        if lat:
            parts.append(f"ms: {lat}")
    for status in devices.values():
        parts.append(status.line())
    return " | ".join(parts)


class StatusLine:
    """A rich ``Live`` line; ``enabled=None`` means 'only on a terminal'."""

    def __init__(self, console: Any | None = None, *, enabled: bool | None = None,
                 max_hz: float = 10.0) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._min_dt = 1.0 / max_hz
        self._last_draw = 0.0
        self._live: Any = None
        self.text = ""

    def update(self, state: str, last: AttemptResult | None, devices: Mapping[str, Status],
               *, speech_s: float = 0.0) -> None:
        self.text = render(state, last, devices, speech_s)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < self._min_dt:
            return
        self._last_draw = now
        from rich.live import Live
        from rich.text import Text

        if self._live is None:
            self._live = Live(Text(self.text), console=self.console, auto_refresh=False,
                              transient=True)
            self._live.start()
        self._live.update(Text(self.text), refresh=True)

    def print(self, message: str) -> None:
        """A permanent line above the live one (a decision)."""
        self.console.print(message, highlight=False, markup=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
