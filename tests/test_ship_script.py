"""Control flow of scripts/ship_student.sh: which steps run, in what order, side by side or not.

The real chain takes 1-2 hours of training and benchmarks, so here `PY` and `EDGEPIN` point at
a stand-in that records each call (start and end time) and can be told to fail; the script
itself (bash, its lanes, its error handling) is the real one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ship_student.sh"

RECORDER = """#!/usr/bin/env bash
# stand-in for python / edgepin: log "start|end <epoch> <args>", fail on $FAIL_ON
echo "start $(date +%s.%N) $*" >> "$CALLS"
sleep 0.15
if [[ -n "${FAIL_ON:-}" && "$*" == *"$FAIL_ON"* ]]; then echo "failing: $*" >&2; exit 3; fi
echo "end $(date +%s.%N) $*" >> "$CALLS"
"""


def _run(tmp_path: Path, lanes: str, fail_on: str = "") -> tuple[subprocess.CompletedProcess, list]:
    data = tmp_path / "data"
    for d in ("lfw", "speechocean762", "grid"):
        (data / d).mkdir(parents=True, exist_ok=True)
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True, exist_ok=True)
    (work / "models" / "face_large.onnx").write_bytes(b"x")
    # the shipped door's attack records, which the door gate reads from HEAD
    (work / "benchmarks").mkdir(exist_ok=True)
    for name in ("attacks.json.gz", "attacks_half2.json.gz", "attacks_large.json.gz",
                 "attacks_large_half2.json.gz"):
        (work / "benchmarks" / name).write_bytes(b"shipped " + name.encode())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "benchmarks"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "shipped door"], check=True)
    ckpt = tmp_path / "student.pt"
    ckpt.write_bytes(b"x")
    rec = tmp_path / "rec"
    rec.write_text(RECORDER)
    rec.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PY": str(rec), "EDGEPIN": str(rec), "NICE": "", "LANES": lanes,
           "DATA": str(data), "CACHE": str(tmp_path / "cache"), "RUNS": str(tmp_path / "runs"),
           "CALLS": str(calls), "FAIL_ON": fail_on}
    proc = subprocess.run(["bash", str(SCRIPT), "voice", str(ckpt)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    rows = []
    if calls.exists():
        for line in calls.read_text().splitlines():
            kind, t, args = line.split(" ", 2)
            rows.append((kind, float(t), args))
    return proc, rows


def _span(rows: list, needle: str) -> tuple[float, float]:
    starts = [t for k, t, a in rows if k == "start" and needle in a]
    ends = [t for k, t, a in rows if k == "end" and needle in a]
    assert starts and ends, f"no completed call containing {needle!r}"
    return min(starts), max(ends)


STEPS = ["-m benchmarks.voice_rehearsal", "ship_student(", "export --target orin", "-m benchmarks.crossmodal",
         "--face-tier student", "-m benchmarks.int8", "train pins", "train fuse",
         "--face-tier large", "calibrate-modes", "-m benchmarks.students", "bench --models",
         "-m benchmarks.attacks --models models --data", "-m benchmarks.door_gate", "demo --models"]


@pytest.mark.parametrize("lanes", ["1", "2"])
def test_every_step_runs_once_in_dependency_order(tmp_path, lanes):
    proc, rows = _run(tmp_path, lanes)
    assert proc.returncode == 0, proc.stderr
    for step in STEPS:
        _span(rows, step)
    calls = [a for k, _, a in rows if k == "start"]
    assert sum("benchmarks.attacks" in a for a in calls) == 4  # 2 tiers x 2 halves enrolled
    assert sum(a.startswith("calibrate --models") for a in calls) == 4  # 2 tiers x FP32/INT8
    # what each step needs was finished before it started
    order = [("benchmarks.voice_rehearsal", "ship_student("), ("ship_student(", "export --target orin"), ("export --target orin", "benchmarks.crossmodal"),
             ("export --target orin", "benchmarks.int8"), ("benchmarks.int8", "benchmarks.crossmodal"),
             ("benchmarks.int8", "train pins"), ("benchmarks.crossmodal", "--face-tier student"),
             ("train pins", "train fuse"), ("train fuse", "--face-tier large --cache"),
             ("--face-tier student", "calibrate-modes"), ("--face-tier large --cache", "calibrate-modes"),
             ("calibrate-modes", "benchmarks.students"), ("benchmarks.students", "bench --models"),
             ("bench --models", "benchmarks.attacks"), ("benchmarks.attacks", "benchmarks.door_gate"),
             ("benchmarks.door_gate", "demo --models")]
    for before, after in order:
        assert _span(rows, before)[1] <= _span(rows, after)[0], f"{after} started before {before} ended"


def test_two_lanes_overlap_and_timed_benchmarks_run_alone(tmp_path):
    proc, rows = _run(tmp_path, "2")
    assert proc.returncode == 0, proc.stderr
    s0, s1 = _span(rows, "benchmarks.crossmodal")
    l0, l1 = _span(rows, "train pins")
    assert s0 < l1 and l0 < s1, "the student tier's lane and the large tier's did not run side by side"
    att = [(k, t) for k, t, x in rows if "benchmarks.attacks" in x]
    starts = sorted(t for k, t in att if k == "start")
    ends = sorted(t for k, t in att if k == "end")
    assert len(starts) == len(ends) == 4  # 2 tiers x 2 halves enrolled
    assert starts[1] < ends[0], "the two attack runs did not overlap"
    for timed in ("benchmarks.int8", "benchmarks.students", "bench --models"):
        t0, t1 = _span(rows, timed)
        others = [t for k, t, x in rows if timed not in x]
        assert not any(t0 < t < t1 for t in others), f"{timed} shared the machine with another step"
    assert (tmp_path / "runs" / "lane_student_tier.log").is_file()


@pytest.mark.parametrize("lanes", ["1", "2"])
def test_a_failed_step_stops_the_chain_before_the_next_phase(tmp_path, lanes):
    proc, rows = _run(tmp_path, lanes, fail_on="train pins")
    assert proc.returncode != 0
    assert not any("calibrate-modes" in a for _, _, a in rows)
    if lanes == "2":
        assert "lane failed: student_tier rc=0, large_tier rc=3" in proc.stderr
        _span(rows, "--face-tier student")  # the other lane still finished its own work


def test_a_student_that_fails_the_door_rehearsal_is_not_shipped(tmp_path):
    proc, rows = _run(tmp_path, "1", fail_on="benchmarks.voice_rehearsal")
    assert proc.returncode != 0
    assert "the door rehearsal fails" in proc.stderr and "nothing was shipped" in proc.stderr
    assert [a for k, _, a in rows if k == "start"] == [
        a for k, _, a in rows if k == "start" and "benchmarks.voice_rehearsal" in a]
    rehearsal = next(a for k, _, a in rows if k == "start")
    assert "--models models/voice.onnx" in rehearsal and "--check" in rehearsal


def test_the_door_gate_compares_each_tier_with_the_shipped_door(tmp_path):
    proc, rows = _run(tmp_path, "2")
    assert proc.returncode == 0, proc.stderr
    gates = [a for k, _, a in rows if k == "start" and "benchmarks.door_gate" in a]
    runs = tmp_path / "runs"
    assert gates == [
        f"-m benchmarks.door_gate --shipped {runs}/shipped_{r}.json.gz "
        f"{runs}/shipped_{r}_half2.json.gz --candidate benchmarks/{r}.json.gz "
        f"benchmarks/{r}_half2.json.gz" for r in ("attacks", "attacks_large")]
    # the references are HEAD's records, taken before the attack runs could overwrite them
    assert (runs / "shipped_attacks.json.gz").read_bytes() == b"shipped attacks.json.gz"
    assert (runs / "shipped_attacks_large_half2.json.gz").read_bytes() == \
        b"shipped attacks_large_half2.json.gz"


def test_each_tier_enrols_both_halves_in_turn(tmp_path):
    proc, rows = _run(tmp_path, "2")
    assert proc.returncode == 0, proc.stderr
    runs = [a for k, _, a in rows if k == "start" and "-m benchmarks.attacks " in a]
    assert len(runs) == 4
    for out in ("attacks", "attacks_large"):
        first = [a for a in runs if f"--out benchmarks/{out}.md" in a]
        second = [a for a in runs if f"--out benchmarks/{out}_half2.md" in a]
        assert len(first) == 1 and "--enrol-half" not in first[0]
        assert len(second) == 1 and "--enrol-half second" in second[0]


def test_a_door_that_turns_away_more_people_stops_before_the_demo(tmp_path):
    proc, rows = _run(tmp_path, "1", fail_on="benchmarks.door_gate")
    assert proc.returncode != 0
    assert "the door gate fails" in proc.stderr and "do not commit" in proc.stderr
    assert not any("demo --models" in a for _, _, a in rows)


def test_lanes_must_be_one_or_two(tmp_path):
    proc, rows = _run(tmp_path, "3")
    assert proc.returncode == 2 and "LANES must be 1 or 2" in proc.stderr and not rows
