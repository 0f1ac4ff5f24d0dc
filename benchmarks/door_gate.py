"""The door itself in the ship rule: does a candidate turn away more enrolled people, or let more
strangers in, than the shipped door, on the same attempts?

Two `benchmarks.attacks` records (`attacks.json.gz`: the shipped door's, and the one the ship
chain wrote with the candidate) are compared in the live-door mode, attempt by attempt. Written
after door_v22 (2026-12-03): it met every accuracy line of issue 15 and passed the voice
rehearsal (`benchmarks/voice_rehearsal.py`, raw cosines), and the chain's attack run then showed
the live door turning away 7.6 % of enrolled people against door_v9's 3.4 % (door_v19: 10.9 %).
The rehearsal did not predict the door; this reads the door.

When both records decided the live door under the same halvings of the people (who sets the
voice veto: `benchmarks.attacks --halvings`, from 2026-12-03), every rate is pooled over them
(the mean over halvings), so neither door is judged on one split's luck; records without them
(or with other halvings) are compared on the one split every mode uses, and the gate says so.
Usage:

    python -m benchmarks.door_gate --shipped OLD.json.gz --candidate benchmarks/attacks.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.attacks_doors import LIVE_DOOR as MODE  # `edgepin run`'s defaults on a live source
from benchmarks.attacks_report import halving_modes, pooled_errors
from benchmarks.voice_rehearsal import TIE_PT  # the rehearsal's: a rise of exactly the limit passes
from edge_runtime.errors import ConfigError

# the most a candidate may be worse, in points of the rate (fixed before door_v23 exists;
# door_v19 and door_v22 exceed the first, both on the same 1000 genuine attempts)
LIMITS_PT = {"genuine": 1.0, "mixed-unenrolled": 0.5, "zero-effort": 0.5}
WORST_PERSON_PT = 10.0  # one enrolled person's own attempts turned away


@dataclass(frozen=True)
class Line:
    """One compared rate: errors of n attempts, shipped against candidate."""

    what: str
    shipped: tuple[int, int]
    candidate: tuple[int, int]
    limit_pt: float

    @property
    def rise_pt(self) -> float:
        return 100.0 * (self.candidate[0] / self.candidate[1] - self.shipped[0] / self.shipped[1])

    @property
    def holds(self) -> bool:
        return self.rise_pt <= self.limit_pt + TIE_PT

    def describe(self) -> str:
        (a, n), (b, m) = self.shipped, self.candidate
        return (f"{self.what}: {a}/{n} ({100 * a / n:.2f} %) -> {b}/{m} ({100 * b / m:.2f} %), "
                f"{self.rise_pt:+.2f} pt (limit +{self.limit_pt:g}): "
                f"{'holds' if self.holds else 'FAILS'}")


def load_record(path: str | Path) -> dict[str, Any]:
    """An attacks record (`.json.gz` or `.json`), refused with its name when unreadable."""
    p = Path(path)
    try:
        with (gzip.open(p, "rt") if p.suffix == ".gz" else p.open()) as fh:
            doc = json.load(fh)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a readable attacks record ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("kinds"), dict):
        raise ConfigError(f"{p}: not an attacks record (no 'kinds'); "
                          "write one with python -m benchmarks.attacks")
    return doc


def _attempts(doc: Mapping[str, Any], kind: str, source: str, modes: Sequence[str]
              ) -> list[dict[str, Any]]:
    attempts = doc["kinds"].get(kind)
    if not attempts:
        raise ConfigError(f"{source}: no '{kind}' attempts")
    for m in modes:
        if any("skipped" not in a and m not in a for a in attempts):
            raise ConfigError(f"{source}: '{kind}' attempts were not decided in mode '{m}'")
    return attempts


def shared_modes(shipped: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """The live-door rows both records decided: every halving when both have the same ones,
    else the live door of the one split every mode uses."""
    a, b = halving_modes(shipped), halving_modes(candidate)
    return a if a and a == b else [MODE]  # same attempts (checked) means the same halvings


def _count(errs: Sequence[tuple[str, bool]]) -> tuple[int, int]:
    return sum(e for _, e in errs), len(errs)


def _worst_person(errs: Sequence[tuple[str, bool]]) -> tuple[str, tuple[int, int]]:
    per: dict[str, list[int]] = {}
    for who, erred in errs:
        c = per.setdefault(who, [0, 0])
        c[0] += erred
        c[1] += 1
    who, (k, n) = max(per.items(), key=lambda kv: kv[1][0] / kv[1][1])
    return who, (k, n)


def compare(shipped: Mapping[str, Any], candidate: Mapping[str, Any],
            names: tuple[str, str] = ("shipped", "candidate")) -> list[Line]:
    """The gate's lines; refused when the two records are not the same attempts. Errors are
    counted as the attack report counts them (`benchmarks.attacks_report.attempt_errors`),
    pooled over the halvings both records share (``shared_modes``)."""
    modes = shared_modes(shipped, candidate)
    lines = []
    genuine = []
    for kind, limit in LIMITS_PT.items():
        a = _attempts(shipped, kind, names[0], modes)
        b = _attempts(candidate, kind, names[1], modes)
        if [x["who"] for x in a] != [x["who"] for x in b] or \
                [x.get("expected") for x in a] != [x.get("expected") for x in b]:
            raise ConfigError(f"{names[0]} and {names[1]} are not the same '{kind}' attempts "
                              "(other people, seed or count): run both with the same "
                              "benchmarks.attacks options")
        ea, eb = (pooled_errors(x, modes, kind == "genuine") for x in (a, b))
        if kind == "genuine":
            genuine = [ea, eb]
        lines.append(Line(kind, _count(ea), _count(eb), limit))
    (wa_who, wa), (wb_who, wb) = (_worst_person(e) for e in genuine)
    lines.append(Line(f"worst person ({wa_who} -> {wb_who})", wa, wb, WORST_PERSON_PT))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shipped", required=True, help="attacks record of the shipped door")
    p.add_argument("--candidate", required=True, help="attacks record with the candidate")
    args = p.parse_args(argv)
    shipped, candidate = load_record(args.shipped), load_record(args.candidate)
    lines = compare(shipped, candidate, (args.shipped, args.candidate))
    modes = shared_modes(shipped, candidate)
    print(f"pooled over {len(modes)} halvings of the people (who sets the voice veto)"
          if len(modes) > 1 else "one split of the people sets the voice veto (the records "
          "share no halvings: benchmarks.attacks --halvings)")
    for line in lines:
        print(line.describe())
    ok = all(line.holds for line in lines)
    print(f"door gate ({MODE}): {'holds' if ok else 'FAILS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        code = main()
    except ConfigError as exc:  # one clear line, as the edgepin CLI prints its errors
        print(f"error: {exc}")
        code = 2
    raise SystemExit(code)
