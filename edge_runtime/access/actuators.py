"""What opens the door on a grant: a command, an HTTP POST, or a GPIO line (pluggable).

An actuator that fails (command exits non-zero, URL unreachable, GPIO driver error) raises
``ActuatorError``; the loop records the failure in the result and the audit log and keeps
running. Nothing biometric is sent: identity, time and the decision's scores only.

``check()`` runs once at start-up (a missing command, an unreachable host or a dead GPIO
driver is a start-up error, not a surprise at the first grant); ``close()`` runs on every exit
path. The GPIO door is fail-secure: locked at start-up, and locked again on close, whether
the process ends normally (after the running pulse), by an exception or by a signal.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
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


def check_actuator(actuator: object) -> None:
    """Start-up check of any actuator that has one (raises ActuatorError)."""
    check = getattr(actuator, "check", None)
    if check is not None:
        check()


def close_actuator(actuator: object, *, wait: bool) -> None:
    """Leave the door locked; ``wait``: let a running pulse end first (normal exit)."""
    close = getattr(actuator, "close", None)
    if close is not None:
        close(wait=wait)


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

    def check(self) -> None:
        exe = self.argv[0]
        found = shutil.which(exe) if os.sep not in exe else (exe if os.access(exe, os.X_OK)
                                                             else None)
        if found is None:
            raise ActuatorError(f"actuator command {exe!r} is not found or not executable")

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

    def check(self) -> None:
        """Can the door controller be reached? (a TCP connection only: no POST, no opening)"""
        parts = urllib.parse.urlsplit(self.url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ActuatorError(f"actuator URL {self.url!r}: {exc}") from exc
        if not parts.hostname:
            raise ActuatorError(f"actuator URL {self.url!r} names no host")
        try:
            socket.create_connection((parts.hostname, port), timeout=self.timeout).close()
        except OSError as exc:
            raise ActuatorError(f"actuator URL {self.url} is unreachable: "
                                f"{exc.strerror or exc}") from exc

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

    True opens the door, False locks it. The line is released after ``pulse_s`` on a timer
    thread, so the loop is not blocked; that thread dies with the process, which is why the
    owner must call ``close()`` on every exit path (``edgepin run`` does, signals included).
    """

    def __init__(self, set_line: Callable[[bool], None], pulse_s: float = 1.0) -> None:
        if not pulse_s > 0:
            raise ConfigError(f"GPIO pulse must be > 0 s, got {pulse_s}")
        self.set_line = set_line
        self.pulse_s = pulse_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Fail-secure start: lock the door now (also proves the driver answers)."""
        self.lock()

    def __call__(self, result: AttemptResult) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            try:
                self.set_line(True)
            except Exception as exc:  # noqa: BLE001 - any driver error must not stop the loop
                self._set_quietly(False)
                raise ActuatorError(f"GPIO actuator failed: {exc}") from exc
            self._timer = threading.Timer(self.pulse_s, self._release)
            self._timer.daemon = True
            self._timer.start()

    def lock(self) -> None:
        """Cancel any pulse and drive the line to locked; ActuatorError when that fails."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                self.set_line(False)
            except Exception as exc:  # noqa: BLE001
                raise ActuatorError(f"GPIO actuator cannot lock the door: {exc}") from exc

    def close(self, *, wait: bool = True) -> None:
        """End locked: after the running pulse (``wait``), or at once (exception, signal)."""
        timer = self._timer
        if wait and timer is not None:
            timer.join()
        self.lock()

    def _release(self) -> None:
        with self._lock:
            self._set_quietly(False)

    def _set_quietly(self, value: bool) -> None:
        try:
            self.set_line(value)
        except Exception:  # noqa: BLE001, S110 - nothing to report to from a timer thread
            pass

    def wait(self) -> None:
        """Block until the pulse has ended (tests, shutdown)."""
        if self._timer is not None:
            self._timer.join()
