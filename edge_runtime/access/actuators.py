"""What opens the door on a grant: a command, an HTTP POST, or a GPIO line (pluggable).

An actuator that fails (command exits non-zero, URL unreachable, GPIO driver error) raises
``ActuatorError``; the loop records the failure in the result and the audit log and keeps
running. Nothing biometric is sent: identity, time and the decision's scores only.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Protocol

from edge_runtime.access.pipeline import AttemptResult
from edge_runtime.errors import ConfigError, EdgepinError


class ActuatorError(EdgepinError):
    """The grant was decided but the door could not be actuated."""


class Actuator(Protocol):
    """Called once per granted attempt; raises ActuatorError on failure."""

    def __call__(self, result: AttemptResult) -> None: ...


def _payload(result: AttemptResult) -> dict:
    return {"granted": result.granted, "identity": result.identity, "t": result.t,
            "reason": result.reason, "scores": result.to_json()["scores"]}


class CommandActuator:
    """Run ``argv`` (no shell) with EDGEPIN_IDENTITY and EDGEPIN_DECISION (JSON) set."""

    def __init__(self, argv: Sequence[str] | str, timeout: float = 5.0) -> None:
        self.argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not self.argv:
            raise ConfigError("actuator command is empty")
        self.timeout = timeout

    def __call__(self, result: AttemptResult) -> None:
        env = {**os.environ, "EDGEPIN_IDENTITY": result.identity or "",
               "EDGEPIN_DECISION": json.dumps(_payload(result))}
        try:
            proc = subprocess.run(self.argv, env=env, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ActuatorError(f"actuator command {self.argv[0]!r} failed: {exc}") from exc
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.split())[-200:]
            raise ActuatorError(f"actuator command {self.argv[0]!r} exited with "
                                f"{proc.returncode}: {tail}")


class HttpActuator:
    """POST the decision as JSON to ``url``; any non-2xx answer is a failure."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"actuator URL must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout = timeout

    def __call__(self, result: AttemptResult) -> None:
        body = json.dumps(_payload(result)).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise ActuatorError(f"actuator POST {self.url} answered {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ActuatorError(f"actuator POST {self.url} failed: {reason}") from exc
        if not 200 <= status < 300:
            raise ActuatorError(f"actuator POST {self.url} answered {status}")


class GpioActuator:
    """Pulse a GPIO line through ``set_line(bool)`` (Jetson.GPIO, gpiod, ... : pluggable).

    The line is released after ``pulse_s`` on a timer thread, so the loop is not blocked.
    """

    def __init__(self, set_line: Callable[[bool], None], pulse_s: float = 1.0) -> None:
        if not pulse_s > 0:
            raise ConfigError(f"GPIO pulse must be > 0 s, got {pulse_s}")
        self.set_line = set_line
        self.pulse_s = pulse_s
        self._timer: threading.Timer | None = None

    def __call__(self, result: AttemptResult) -> None:
        try:
            self.set_line(True)
        except Exception as exc:  # noqa: BLE001 - any driver error must not stop the loop
            raise ActuatorError(f"GPIO actuator failed: {exc}") from exc
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.pulse_s, self._release)
        self._timer.daemon = True
        self._timer.start()

    def _release(self) -> None:
        try:
            self.set_line(False)
        except Exception:  # noqa: BLE001, S110 - nothing to report to from a timer thread
            pass

    def wait(self) -> None:
        """Block until the pulse has ended (tests, shutdown)."""
        if self._timer is not None:
            self._timer.join()
