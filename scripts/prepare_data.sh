#!/usr/bin/env bash
# Extra face training data (UTKFace), extracted outside the project and verified.
# Needs a snapshot (git dir) of github.com/mattans/AgeProgression; see docs/face_data.md.
#   scripts/prepare_data.sh /work/.mirror/mattans+AgeProgression/repo /work/data/utkface
set -euo pipefail
GIT_DIR=${1:?usage: $0 GIT_DIR [DEST]}
DEST=${2:-/work/data/utkface}
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PY" -m train.data_prep utkface --git-dir "$GIT_DIR" --dest "$DEST"
echo "UTKFace images: $DEST/data/UTKFace/unlabeled"
