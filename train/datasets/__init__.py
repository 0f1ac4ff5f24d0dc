"""Dataset readers: folders of faces, voices and talking-face clips, VoxCeleb1, splits, manifests.

Plain Python + numpy, no torch, so calibration/ and device tools can read the same data.
Decoding (`iter_decoded`) uses edge_runtime's loaders, imported only when called.
"""

from __future__ import annotations

from train.datasets.core import MODALITIES, Reader, Sample, check_file
from train.datasets.folders import ClipFolder, FaceFolder, SpeechFolder
from train.datasets.labels import read_labels_tsv
from train.datasets.librispeech import LibriSpeechFlat
from train.datasets.manifest import file_sha256, manifest_hash, write_manifest
from train.datasets.splits import holdout_split, identity_split, split_samples
from train.datasets.voxceleb import VoxCeleb1, VoxIdentity, read_vox1_meta

__all__ = [
    "MODALITIES",
    "ClipFolder",
    "FaceFolder",
    "LibriSpeechFlat",
    "Reader",
    "Sample",
    "SpeechFolder",
    "VoxCeleb1",
    "VoxIdentity",
    "check_file",
    "file_sha256",
    "holdout_split",
    "identity_split",
    "manifest_hash",
    "read_labels_tsv",
    "read_vox1_meta",
    "split_samples",
    "write_manifest",
]
