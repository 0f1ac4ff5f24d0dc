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


def test_spec_masks_blank_bands_and_spans_to_the_window_mean_and_nothing_when_off():
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((200, 64)).astype(np.float32)
    off = VoiceAugment()
    state = rng.bit_generator.state
    assert off.mask(feats, rng) is feats
    assert rng.bit_generator.state == state  # off draws nothing: earlier recipes repeat exactly
    on = VoiceAugment(spec_p=1.0, freq_masks=2, freq_width=8, time_masks=2, time_width=20)
    widths = []
    for _ in range(200):
        out = on.mask(feats, rng)
        assert out is not feats and out.shape == feats.shape
        zero_bands = np.flatnonzero(np.all(out == 0, axis=0))
        zero_frames = np.flatnonzero(np.all(out == 0, axis=1))
        assert len(zero_bands) <= 16 and len(zero_frames) <= 40  # at most 2 masks of each width
        kept = (out != 0)
        np.testing.assert_array_equal(out[kept], feats[kept])  # the rest untouched
        widths.append(len(zero_bands))
        assert np.count_nonzero(feats == 0) == 0  # the input itself is never changed
    assert max(widths) > 8  # two bands do occur ...
    assert min(widths) == 0  # ... and so does none (a width of 0)
