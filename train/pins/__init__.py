"""Cross-modal identity space (Learnable PINs) and the fuse-after-align (FAA) match head.

edge mode: small projection heads on the FROZEN students' embeddings map face (128-d) and voice
(256-d) into one 128-d PIN space; the FAA encoder scores a (face, voice) pair as match/non-match.
full mode: the two student backbones trained end to end with the same losses (GPUs, VoxCeleb).
"""
