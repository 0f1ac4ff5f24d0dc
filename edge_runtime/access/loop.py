"""The access-control loop: idle -> person present -> collecting -> decide -> grant/deny ->
cool-down, over any capture source (camera + microphone, or a replayed file).

Time inside the loop is the SOURCE's timeline (frame and audio timestamps), so a replay run
as fast as possible behaves exactly like the same replay in real time, and a test needs no
sleeps. Lockout counts on the wall clock (an attacker's retries happen in real time); with an
audit log it is replayed from the log's rows, so it holds across `--once` runs, restarts and
several processes sharing the log.
Every decision is audited; nothing inside an attempt can stop the loop: bad input, a locked
gallery or a failing actuator become a denial (or a note) with a one-line reason.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from edge_runtime.access.actuators import Actuator, ActuatorError
from edge_runtime.access.pipeline import AttemptResult, Collector, Verifier, denial
from edge_runtime.access.status_line import StatusLine
from edge_runtime.capture.base import AudioChunk, AVSource, Batch
from edge_runtime.errors import ConfigError, EdgepinError
from edge_runtime.frontend.audio import TARGET_SR
from edge_runtime.store.audit import AuditLog, AuditRecord

log = logging.getLogger(__name__)


class State(str, Enum):
    IDLE = "idle"
    PRESENT = "person present"
    COLLECTING = "collecting"
    DECIDING = "deciding"
    GRANTED = "granted"
    DENIED = "denied"
    COOLDOWN = "cool-down"


@dataclass(frozen=True)
class LoopConfig:
    """Timings in seconds of source time, except the lockout (wall clock).

    ``decide_at_end``: for finite sources (a replayed clip): decide when the source ends,
    on everything it held, rather than as soon as ``min_speech_s`` of speech was heard.
    ``lockout_failures`` 0 disables the lockout. ``unsafe_no_liveness``: the operator's
    explicit consent to a verifier that may decide on one modality (``missing_modality
    "single"``), where no liveness check runs and a still photo can be granted.
    """

    cooldown_s: float = 3.0
    lockout_failures: int = 5
    lockout_window_s: float = 60.0
    lockout_s: float = 60.0
    collect_timeout_s: float = 10.0
    face_lost_s: float = 1.5
    decide_at_end: bool = False
    idle_detect_interval_s: float = 0.2
    detect_interval_s: float = 0.0
    max_frames_per_poll: int = 2
    preroll_s: float = 0.5
    poll_timeout: float = 0.05
    unsafe_no_liveness: bool = False
    look_every_s: float = 0.5  # sequential decisions: look again after this much more speech
    # the attempt ends when the person, having given enough to decide on, has been quiet this
    # long after speaking (0: only when they leave or at the time limit): a short phrase is
    # decided on what was said, without waiting for the time limit
    speech_end_s: float = 1.0

    def __post_init__(self) -> None:
        if self.lockout_failures < 0 or self.max_frames_per_poll < 1:
            raise ConfigError("lockout_failures must be >= 0 and max_frames_per_poll >= 1")
        for name in ("cooldown_s", "lockout_window_s", "lockout_s", "collect_timeout_s",
                     "face_lost_s", "idle_detect_interval_s", "detect_interval_s", "preroll_s",
                     "speech_end_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


class Lockout:
    """N failed verifications within a window lock the door for a while (wall clock).

    ``history(since)``: (unix time, granted) of the verifications recorded since then (the
    audit log's rows). With it the state is replayed from that shared record before each
    decision, on ``time.time``: a restart or another process sees the same lockout.
    """

    def __init__(self, failures: int, window_s: float, duration_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 history: Callable[[float], list[tuple[float, bool]]] | None = None) -> None:
        self.failures, self.window_s, self.duration_s = failures, window_s, duration_s
        self._history = history
        self._clock = time.time if history is not None and clock is time.monotonic else clock
        self._times: collections.deque[float] = collections.deque()
        self._until = 0.0

    def remaining(self) -> float:
        """Seconds of lockout left (0: not locked)."""
        if self._history is not None and self.failures:
            now = self._clock()
            self._times.clear()
            self._until = 0.0
            for t, granted in self._history(now - 2 * (self.window_s + self.duration_s)):
                self._apply(t, granted)
        return max(0.0, self._until - self._clock())

    def record(self, granted: bool) -> None:
        if self._history is None:  # else the audit row of this decision is the record
            self._apply(self._clock(), granted)

    def _apply(self, now: float, granted: bool) -> None:
        if self.failures == 0 or now < self._until:  # attempts while locked are not verified
            return
        if granted:
            self._times.clear()
            return
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) >= self.failures:
            self._until = now + self.duration_s
            self._times.clear()


class AccessLoop:
    """Drives one ``Verifier`` over capture sources; see the module docstring."""

    def __init__(
        self,
        verifier: Verifier,
        config: LoopConfig | None = None,
        *,
        audit: AuditLog | None = None,
        actuator: Actuator | None = None,
        status: StatusLine | None = None,
        lockout: Lockout | None = None,
        on_decision: Callable[[AttemptResult], None] | None = None,
    ) -> None:
        self.verifier = verifier
        self.config = config or LoopConfig()
        c = self.config
        self.audit = audit
        self.actuator = actuator
        self.status = status
        if verifier.config.missing_modality != "deny" and not c.unsafe_no_liveness:
            raise ConfigError(
                f"missing-modality {verifier.config.missing_modality!r} grants on one modality "
                "with no liveness check (a still photo passes): pass --unsafe-no-liveness "
                "(LoopConfig.unsafe_no_liveness) to accept that explicitly")
        history = audit.verifications_since if audit is not None else None
        self.lockout = lockout or Lockout(c.lockout_failures, c.lockout_window_s, c.lockout_s,
                                          history=history)
        self.on_decision = on_decision
        self.state = State.IDLE
        self.last: AttemptResult | None = None
        self.start_error: str | None = None
        self._reset()

    def _reset(self) -> None:
        self._collector: Collector | None = None
        self._attempt_t0 = 0.0
        self._next_look = 0.0
        self._needs = ""
        self._last_detect = -np.inf
        self._cool_until = -np.inf
        self._preroll: collections.deque[AudioChunk] = collections.deque()
        self._preroll_n = 0
        self._now = 0.0
        self._source_name = ""
        self._idle_problems: collections.Counter[str] = collections.Counter()
        self._idle_frames = 0  # frames looked at while idle, to say why nobody was seen

    # --------------------------------------------------------------------------- driving
    def run(self, source: AVSource, *, once: bool = False, max_attempts: int | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[AttemptResult]:
        """Poll ``source`` until it ends (or ``once``/``max_attempts``/``should_stop``).

        With ``once``, a source that ends before anyone tried still yields one denial saying
        why, so ``edgepin run --once --json`` always prints one decision.
        """
        self._reset()
        self._source_name = getattr(source, "name", "source")
        self.verifier.warm()
        results: list[AttemptResult] = []
        self.start_error = None
        try:
            source.start()
        except EdgepinError as exc:  # e.g. no PortAudio: nothing to retry, say why and stop
            self.start_error = " ".join(str(exc).split())  # a start-up error: not an attempt,
            return [denial(str(exc), source=self._source_name)]  # so neither audited nor shown
        try:
            while not (should_stop and should_stop()):
                try:
                    batch = source.poll(self.config.poll_timeout)
                except EdgepinError as exc:
                    results.append(self._finish(denial(str(exc), source=self._source_name,
                                                       t=self._now)))
                    break
                results += self.step(batch)
                self._show(source)
                if (once and results) or (max_attempts and len(results) >= max_attempts):
                    break
                if batch.ended:
                    break
        finally:
            source.close()
        if once and not results:
            why = self._idle_problem()
            results.append(self._finish(denial(f"source ended before an attempt: {why}",
                                               source=self._source_name, t=self._now)))
        return results

    def step(self, batch: Batch) -> list[AttemptResult]:
        """Advance the state machine by one poll's worth of media."""
        c = self.config
        out: list[AttemptResult] = []
        if batch.frames:
            self._now = max(self._now, batch.frames[-1].t)
        if batch.audio is not None:
            self._now = max(self._now, batch.audio.end)
        if self.state == State.COOLDOWN:
            if self._now < self._cool_until:
                return out
            self.state = State.IDLE
        audio = batch.audio
        if self._collector is None:  # idle: keep a little audio in case speech starts first
            if audio is not None:
                self._keep_preroll(audio)
            frames = batch.frames[-1:]
            if frames and frames[0].t - self._last_detect >= c.idle_detect_interval_s:
                self._last_detect = frames[0].t
                probe = self.verifier.new_attempt(self._source_name)
                self._idle_frames += 1
                if not probe.add_frame(frames[0]):
                    self._idle_problems.update(probe.problems)
                else:
                    self._collector, self._attempt_t0 = probe, frames[0].t
                    self.state = State.PRESENT
                    for chunk in self._preroll:
                        probe.add_audio(chunk.samples, chunk.sample_rate, chunk.t)
                    self._preroll.clear()
                    self._preroll_n = 0
            if self._collector is None:
                return out
            audio = None  # it was in the pre-roll just given to the collector
        col = self._collector
        if audio is not None:
            col.add_audio(audio.samples, audio.sample_rate, audio.t)
        frames = [f for f in batch.frames if f.t - self._last_detect >= c.detect_interval_s]
        for frame in frames[-c.max_frames_per_poll:]:
            if frame.t <= self._last_detect:
                continue
            self._last_detect = frame.t
            col.add_frame(frame)
        speech = col.speech_seconds()
        if self.state == State.PRESENT and speech > 0:
            self.state = State.COLLECTING
        last_face = col.last_face_t if col.last_face_t is not None else self._attempt_t0
        lost = self._now - last_face > c.face_lost_s
        cfg = self.verifier.config
        ready = speech >= cfg.min_speech_s and col.good_faces >= cfg.min_face_frames
        quiet = col.silence_after_speech() if ready and c.speech_end_s > 0 else None
        if batch.ended or self._now - self._attempt_t0 > c.collect_timeout_s or \
                (lost and self.state == State.COLLECTING) or \
                (quiet is not None and quiet >= c.speech_end_s and not c.decide_at_end):
            out.append(self._decide(col))
        elif ready and not c.decide_at_end and speech >= self._next_look:
            # sequential: decide now if the evidence is decisive, else keep collecting
            early = self._decide(col, final=False)
            if early is not None:
                out.append(early)
        elif lost:  # walked away without speaking: nobody tried, nothing to audit
            self._collector = None
            self.state = State.IDLE
        return out

    # ---------------------------------------------------------------------------- decide
    def _decide(self, col: Collector, final: bool = True) -> AttemptResult | None:
        if not final and self.lockout.remaining() <= 0:
            try:
                early = self.verifier.decide(col, t=self._now, final=False)
            except Exception:  # noqa: BLE001 - the final decision reports it
                early = None
            if early is None or not early.final:
                self._next_look = col.speech_seconds() + self.config.look_every_s
                self._needs = early.needs if early is not None else ""
                return None
            self.state = State.DECIDING
            self.lockout.record(early.granted)
            self._collector = None
            self._cool_until = self._now + self.config.cooldown_s
            return self._finish(early)
        self.state = State.DECIDING
        remaining = self.lockout.remaining()
        if remaining > 0:
            result = denial(
                f"locked out after {self.lockout.failures} failed attempts within "
                f"{self.lockout.window_s:g} s; try again in {remaining:.0f} s",
                source=self._source_name, t=self._now)
        else:
            try:
                result = self.verifier.decide(col, t=self._now,
                                              live=not self.config.decide_at_end)
            except Exception as exc:  # noqa: BLE001 - the loop must survive any attempt
                log.exception("attempt failed")
                result = denial(f"internal error: {type(exc).__name__}: {exc}",
                                source=self._source_name, t=self._now)
            if result.scores:  # only real verifications count towards the lockout
                self.lockout.record(result.granted)
        self._collector = None
        self._next_look = 0.0
        self._needs = ""
        self._cool_until = self._now + self.config.cooldown_s
        return self._finish(result)

    def _finish(self, result: AttemptResult) -> AttemptResult:
        """Actuate, audit, report; then cool down."""
        if self._collector is not None or result.scores:
            result.latencies_ms["time_to_decision"] = 1e3 * max(0.0, self._now - self._attempt_t0)
        self.state = State.GRANTED if result.granted else State.DENIED
        if result.granted and self.actuator is not None:
            try:
                self.actuator(result)
                result.actuator = "ok"
            except ActuatorError as exc:
                result.actuator = f"failed: {' '.join(str(exc).split())}"
                result.reason += f"; DOOR NOT OPENED: actuator {result.actuator}"
                log.error("%s", exc)
        if self.audit is not None:
            reason = result.reason
            if result.liveness and result.liveness not in reason:
                reason += f" | liveness: {result.liveness}"
            record = AuditRecord(
                decision="granted" if result.granted else "denied",
                identity=result.identity or result.candidate,
                scores={k: v for k, v in result.scores.items() if v is not None},
                latencies_ms=dict(list(result.latencies_ms.items())[:32]),
                reason=reason, source=result.source or self._source_name)
            try:
                self.audit.append(record)
            except EdgepinError as exc:
                log.error("audit log: %s", exc)
                result.reason += f" (not audited: {exc})"
        self.last = result
        if self.on_decision is not None:
            self.on_decision(result)
        self.state = State.COOLDOWN
        return result

    def _idle_problem(self) -> str:
        if self._collector is not None:
            return self._collector.face_problem()
        if not self._idle_frames:
            return "no camera frames received"
        if not self._idle_problems:
            return "nobody was seen"
        text, n = self._idle_problems.most_common(1)[0]
        return f"{text} ({n} of {self._idle_frames} frames looked at)"

    def _keep_preroll(self, chunk: AudioChunk) -> None:
        """The last ``preroll_s`` of audio, always including the newest chunk."""
        limit = int(self.config.preroll_s * TARGET_SR)
        self._preroll.append(chunk)
        self._preroll_n += chunk.samples.size
        while len(self._preroll) > 1 and self._preroll_n - self._preroll[0].samples.size >= limit:
            self._preroll_n -= self._preroll.popleft().samples.size

    def _show(self, source: AVSource) -> None:
        if self.status is not None:
            speech = self._collector.speech_seconds() if self._collector else 0.0
            state = self.state.value
            if self._collector is not None and self._needs:
                state = f"{state}: {self._needs}"
            self.status.update(state, self.last, source.status(), speech_s=speech)
