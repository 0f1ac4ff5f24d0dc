#!/usr/bin/env bash
# Build the TensorRT engines of target orin for orin-nx (1 DLA core(s)); planned for TensorRT 10.3.0.
# One failed engine never stops the others; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")"
built=(); skipped=(); failed=()
bash face_large-gpu/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face_large-gpu); elif [ $rc -eq 3 ]; then skipped+=(face_large-gpu); else failed+=(face_large-gpu); fi
bash face_large-fp16/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face_large-fp16); elif [ $rc -eq 3 ]; then skipped+=(face_large-fp16); else failed+=(face_large-fp16); fi
bash face_detector-gpu/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face_detector-gpu); elif [ $rc -eq 3 ]; then skipped+=(face_detector-gpu); else failed+=(face_detector-gpu); fi
bash face_detector-fp16/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face_detector-fp16); elif [ $rc -eq 3 ]; then skipped+=(face_detector-fp16); else failed+=(face_detector-fp16); fi
bash face-gpu/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face-gpu); elif [ $rc -eq 3 ]; then skipped+=(face-gpu); else failed+=(face-gpu); fi
bash face-fp16/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face-fp16); elif [ $rc -eq 3 ]; then skipped+=(face-fp16); else failed+=(face-fp16); fi
bash face-dla/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(face-dla); elif [ $rc -eq 3 ]; then skipped+=(face-dla); else failed+=(face-dla); fi
bash voice-gpu/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(voice-gpu); elif [ $rc -eq 3 ]; then skipped+=(voice-gpu); else failed+=(voice-gpu); fi
bash voice-fp16/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(voice-fp16); elif [ $rc -eq 3 ]; then skipped+=(voice-fp16); else failed+=(voice-fp16); fi
bash voice-dla/build_engine.sh; rc=$?
if [ $rc -eq 0 ]; then built+=(voice-dla); elif [ $rc -eq 3 ]; then skipped+=(voice-dla); else failed+=(voice-dla); fi
echo "orin-nx: built ${#built[@]} engine(s): ${built[*]:-}; skipped (not on this TensorRT): ${skipped[*]:-none}; failed: ${failed[*]:-none}"
if [ ${#failed[@]} -gt 0 ]; then exit 1; fi
