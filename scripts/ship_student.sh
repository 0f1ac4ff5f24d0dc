#!/usr/bin/env bash
# Replace a shipped student and re-run everything that depends on it, in order (issues 14, 15;
# models/README.md, "How they were trained"). Usage, from the repository root with the train
# venv active (or EDGEPIN/PY pointing at it):
#
#   scripts/ship_student.sh face  /work/runs/face_w10/student.pt
#   scripts/ship_student.sh voice /work/runs/i15_v3/student.pt
#
# Environment: DATA (default ../shared/data), CACHE (default /work/cache), RUNS (scratch folder
# for the head runs, default /work/runs/ship), FACE_TTA (none|flip: how the student tier's
# operating points make the device embed faces, benchmarks/face_tta.md; default flip),
# EXPORT_ARGS (extra `edgepin export` options, e.g. "--n-calib 320" where memory is short: the
# face's percentile calibration holds every activation of every sample, ~30 MB each),
# STEPS (default all; e.g. "calibrate modes" to resume after a failed step; without "rehearse"
# a voice student is shipped even where the door rehearsal fails it), LANES (1 or 2:
# with 2, the student tier's heads and operating points run beside the large tier's, and the
# two attack runs side by side; each lane's output goes to $RUNS/lane_*.log; the timed
# benchmarks, INT8 report included, always run alone). Long steps run under `nice -n 19`;
# a 2-core machine needs about 1-2 h for the whole chain with LANES=1. A voice student changes
# the large face tier's heads and operating points too (they fuse the same voice), a face
# student only the student tier's. The attack runs enrol each half of the held-out people in turn
# (benchmarks.attacks --enrol-half; ~30 min each on 2 cores); then the door gate
# (benchmarks/door_gate.py) compares the live door, summed over both halves, with the shipped
# one (HEAD's attack records of both halves, same attempts) and stops
# the chain, before the demo, when the candidate turns away more enrolled people or lets more
# strangers in; the working tree then holds the candidate's files: do not commit them.
set -euo pipefail

modality=${1:?usage: ship_student.sh face|voice CHECKPOINT}
ckpt=${2:?usage: ship_student.sh face|voice CHECKPOINT}
DATA=${DATA:-../shared/data}
CACHE=${CACHE:-/work/cache}
RUNS=${RUNS:-/work/runs/ship}
STEPS=${STEPS:-"rehearse ship export heads calibrate modes benchmarks demo"}
FACE_TTA=${FACE_TTA:-flip}
PY=${PY:-python}
EDGEPIN=${EDGEPIN:-edgepin}
NICE=${NICE:-nice -n 19}
LANES=${LANES:-1}

case "$modality" in face|voice) ;; *) echo "modality must be face or voice, got $modality" >&2; exit 2 ;; esac
case "$LANES" in 1|2) ;; *) echo "LANES must be 1 or 2, got $LANES" >&2; exit 2 ;; esac
[[ -f "$ckpt" ]] || { echo "checkpoint not found: $ckpt" >&2; exit 2; }
[[ -d "$DATA/lfw" && -d "$DATA/speechocean762" && -d "$DATA/grid" ]] || {
  echo "$DATA lacks lfw/, speechocean762/ or grid/ (the shared data)" >&2; exit 2; }

tiers=(student)
if [[ "$modality" == voice ]]; then
  [[ -f models/face_large.onnx ]] || {
    echo "models/face_large.onnx missing: run 'edgepin port-dlib --face-large --models models' first" >&2; exit 2; }
  tiers=(student large)
fi
want() { [[ " $STEPS " == *" $1 "* ]]; }
has_large() { [[ " ${tiers[*]} " == *" large "* ]]; }
say() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

if want rehearse && [[ "$modality" == voice ]]; then
  # minutes, before the chain: a voice student that meets every accuracy line can still fail
  # people at the door (door_v19, 2026-12-03); the rule is in benchmarks/voice_rehearsal.py
  say "door rehearsal: $ckpt against the shipped models/voice.onnx (report: $RUNS/voice_rehearsal.md)"
  mkdir -p "$RUNS"
  $NICE $PY -m benchmarks.voice_rehearsal --data "$DATA" --models models/voice.onnx "$ckpt" \
    --check --out "$RUNS/voice_rehearsal.md" || {
    echo "the door rehearsal fails $ckpt (see $RUNS/voice_rehearsal.md); nothing was shipped" >&2; exit 1; }
fi
if want ship; then
  say "ship $ckpt as models/$modality.onnx"
  $PY -c "from export.students import ship_student; ship_student('$ckpt', 'models')"
fi
# side by side when LANES=2 (their manifest writes are locked, edge_runtime/bundle.py), else
# one after the other; either way a failed lane stops the chain
lanes() {
  if [[ "$LANES" == 1 ]]; then "$1"; "$2"; return; fi
  mkdir -p "$RUNS"
  local r1=0 r2=0 p1 p2
  say "lanes $1 | $2 (logs: $RUNS/lane_$1.log, $RUNS/lane_$2.log)"
  "$1" > "$RUNS/lane_$1.log" 2>&1 & p1=$!
  "$2" > "$RUNS/lane_$2.log" 2>&1 & p2=$!
  wait "$p1" || r1=$?
  wait "$p2" || r2=$?
  tail -n 40 "$RUNS/lane_$1.log" "$RUNS/lane_$2.log"
  if (( r1 != 0 || r2 != 0 )); then
    echo "lane failed: $1 rc=$r1, $2 rc=$r2 (logs in $RUNS)" >&2; exit 1
  fi
}
calibrate_tier() {
  local tier=$1 suffix tta
  suffix=$([[ $tier == large ]] && echo ".large" || echo "")
  tta=$([[ $tier == large ]] && echo none || echo "$FACE_TTA")
  say "operating points, $tier tier"
  $NICE $EDGEPIN calibrate --models models --data "$DATA" --face-tier "$tier" --cache "$CACHE" \
    --face-tta "$tta" --out "models/operating_points$suffix.yaml" \
    $([[ $tier == student ]] && echo "--report benchmarks/operating_points.md")
  $NICE $EDGEPIN calibrate --models models --data "$DATA" --face-tier "$tier" --cache "$CACHE" \
    --face-tta "$tta" --precision int8 --out "models/operating_points$suffix.int8.yaml" \
    $([[ $tier == student ]] && echo "--report benchmarks/operating_points_int8.md")
}
student_tier() {  # cross-modal heads of the student face tier, then its operating points
  if want heads; then
    say "cross-modal heads, student tier"
    $NICE $PY -m benchmarks.crossmodal --data "$DATA" --students models --export models
  fi
  if want calibrate; then calibrate_tier student; fi
}
large_tier() {  # for a voice student, the large face tier's heads and operating points
  has_large || return 0
  if want heads; then
    say "cross-modal heads, large tier"
    $NICE $EDGEPIN train pins --data "$DATA" --face-tier large --students models \
      --export models --out "$RUNS/pins_large" --cache "$CACHE"
    $NICE $EDGEPIN train fuse --data "$DATA" --pins "$RUNS/pins_large" --students models \
      --export models --out "$RUNS/faa_large" --cache "$CACHE"
  fi
  if want calibrate; then calibrate_tier large; fi
}
attacks_student() {  # each half of the held-out people enrolled in turn
  $NICE $PY -m benchmarks.attacks --models models --data "$DATA" --out benchmarks/attacks.md
  $NICE $PY -m benchmarks.attacks --models models --data "$DATA" --enrol-half second \
    --out benchmarks/attacks_half2.md
}
attacks_large() {
  has_large || return 0
  $NICE $PY -m benchmarks.attacks --models models --data "$DATA" --face-tier large \
    --out benchmarks/attacks_large.md
  $NICE $PY -m benchmarks.attacks --models models --data "$DATA" --face-tier large \
    --enrol-half second --out benchmarks/attacks_large_half2.md
}

if want export; then
  say "INT8 export and its gate"
  $NICE $EDGEPIN export --target orin --models models --out models --only "$modality" \
    --data-faces "$DATA/lfw" --data-voices "$DATA/speechocean762" --cache "$CACHE" ${EXPORT_ARGS:-}
  # alone: the report times FP32 against INT8
  $NICE $PY -m benchmarks.int8 --models models --data-faces "$DATA/lfw" \
    --data-voices "$DATA/speechocean762" --cache "$CACHE" --threads 1
fi
lanes student_tier large_tier
if want modes; then
  say "security modes (AV sync from benchmarks/avsync.json, voice veto re-measured)"
  ops=(models/operating_points.yaml models/operating_points.int8.yaml)
  has_large && ops+=(models/operating_points.large.yaml models/operating_points.large.int8.yaml)
  $NICE $EDGEPIN calibrate-modes --op "${ops[@]}" --grid "$DATA/grid" \
    --sync-from benchmarks/avsync.json --voice-data "$DATA"
fi
if want benchmarks; then
  say "students vs teachers, latency, attacks"
  $NICE $PY -m benchmarks.students --models models --data "$DATA" --cache "$CACHE" \
    --timing-samples 100 --notes benchmarks/notes/students_tried.md
  $EDGEPIN bench --models models --runs 200 --warmup 20 --out benchmarks
  # the shipped door's attack records (HEAD's, both halves), for the door gate below
  records=(attacks)
  has_large && records+=(attacks_large)
  mkdir -p "$RUNS"
  for r in "${records[@]}"; do
    for f in "$r.json.gz" "${r}_half2.json.gz"; do
      git show "HEAD:benchmarks/$f" > "$RUNS/shipped_$f" || {
        echo "no committed benchmarks/$f to compare the door with" >&2; exit 1; }
    done
  done
  lanes attacks_student attacks_large
  # the door itself (benchmarks/door_gate.py, after door_v22, 2026-12-03): a candidate that
  # passes the rehearsal can still turn away more enrolled people at the live door
  say "door gate: live door, candidate against the shipped door, same attempts, both halves"
  for r in "${records[@]}"; do
    $PY -m benchmarks.door_gate --shipped "$RUNS/shipped_$r.json.gz" \
      "$RUNS/shipped_${r}_half2.json.gz" --candidate "benchmarks/$r.json.gz" \
      "benchmarks/${r}_half2.json.gz" || {
      echo "the door gate fails $ckpt ($r, above): do not commit; 'git checkout -- models" \
        "benchmarks' restores the shipped door" >&2; exit 1; }
  done
fi
if want demo; then
  say "demo"
  # --models: without it the demo opens the installed package's models/, not this checkout's
  $EDGEPIN demo --models models --door "$DATA"
fi
say "done: update benchmarks/students.md and models/README.md with the figures above"
