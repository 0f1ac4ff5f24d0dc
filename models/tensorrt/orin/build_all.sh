#!/usr/bin/env bash
# Build every engine of target orin for THIS board: build_all.<device>.sh, the device
# taken from the first argument, $EDGEPIN_DEVICE or /proc/device-tree/model (orin-nano orin-nx orin-agx).
set -euo pipefail
cd "$(dirname "$0")"
DEVICE="${1:-${EDGEPIN_DEVICE:-}}"
MODEL="$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || true)"
if [ -z "$DEVICE" ]; then
  case "$MODEL" in
    *Orin\ Nano*) DEVICE=orin-nano ;;
    *Orin\ NX*) DEVICE=orin-nx ;;
    *AGX\ Orin*) DEVICE=orin-agx ;;
  esac
fi
if [ -z "$DEVICE" ] || [ ! -f "build_all.$DEVICE.sh" ]; then
  echo "unknown device '$DEVICE' (board: ${MODEL:-unknown}): run build_all.sh DEVICE," \
       "DEVICE one of: orin-nano orin-nx orin-agx" >&2
  exit 2
fi
exec bash "build_all.$DEVICE.sh"
