#!/usr/bin/env bash
# Build every engine for target orin (Jetson AGX Orin / Orin NX / Orin Nano (Ampere, sm_87)), TensorRT 10.3.0. Run on the device.
set -euo pipefail
cd "$(dirname "$0")"
bash face-gpu/build_engine.sh
bash face-fp16/build_engine.sh
bash face-dla/build_engine.sh
bash voice-gpu/build_engine.sh
bash voice-fp16/build_engine.sh
bash voice-dla/build_engine.sh
