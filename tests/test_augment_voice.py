"""Voice augmentation: short tiled pieces like the ones a short live probe turns into."""

from __future__ import annotations

import numpy as np

from edge_runtime.frontend.features import VoiceFrontEnd
from train.augment import VoiceAugment


def test_shorten_keeps_a_piece_of_the_requested_length_or_the_whole_crop():
    rng = np.random.default_rng(0)
    wav = np.arange(32000, dtype=np.float32)
    never, always = VoiceAugment(short_p=0.0), VoiceAugment(short_p=1.0, short_s=(0.5, 1.0))
    assert never.shorten(wav, 16000, rng) is wav
    for _ in range(50):
        piece = always.shorten(wav, 16000, rng)
        assert 8000 <= len(piece) <= 16000
        # a contiguous piece of the crop, not a resampled or padded copy
        np.testing.assert_array_equal(piece, wav[int(piece[0]): int(piece[0]) + len(piece)])


def test_a_short_piece_becomes_one_full_window_as_on_the_device():
    rng = np.random.default_rng(1)
    fe = VoiceFrontEnd()
    speech = (0.1 * rng.standard_normal(fe.window_samples)).astype(np.float32)
    piece = VoiceAugment(short_p=1.0).shorten(speech, 16000, rng)
    feats = fe.windows(piece)
    assert len(piece) < fe.window_samples and feats.shape == (1, fe.window_frames, 64)
