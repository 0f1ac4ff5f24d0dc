"""Door-condition views: deterministic, right length, SNR and band as asked (synthetic signals:
shape and signal-processing checks only, no accuracy claim)."""

from __future__ import annotations

import numpy as np
import pytest

from train.augment_room import RirBank, RoomAugment, ViewParams, apply_view, band_limit

SR = 16000


def _tone(n: int = 32000) -> np.ndarray:
    t = np.arange(n) / SR
    return (0.1 * np.sin(2 * np.pi * 1000 * t) + 0.05 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)


def test_sample_is_deterministic_and_in_range() -> None:
    aug = RoomAugment()
    pool = [f"h{i}" for i in range(10)]
    views = [aug.sample(s, 48, pool) for s in range(200)]
    assert views == [aug.sample(s, 48, pool) for s in range(200)]
    noisy = [v for v in views if v.noise != "none"]
    assert noisy and all(5.0 <= v.snr_db <= 20.0 for v in noisy)
    assert all(3 <= len(v.babble) <= 5 for v in views if v.noise == "babble")
    assert all(0.9 <= v.speed <= 1.1 for v in views)
    assert len({v.key() for v in views}) == len(views)


def test_additive_noise_hits_the_snr() -> None:
    x = _tone()
    p = ViewParams(seed=3, noise="fan", snr_db=10.0)
    y = apply_view(x, p, None, {}).astype(np.float64)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x) ** 2))
    assert len(y) == len(x)
    assert snr == pytest.approx(10.0, abs=0.5)
    assert np.array_equal(y, apply_view(x, p, None, {}))


def test_babble_needs_its_talkers_and_mixes_them() -> None:
    x = _tone()
    talkers = {"a": np.random.default_rng(0).standard_normal(40000).astype(np.float32),
               "b": np.random.default_rng(1).standard_normal(20000).astype(np.float32)}
    y = apply_view(x, ViewParams(seed=1, noise="babble", snr_db=5.0, babble=("a", "b")), None,
                   talkers)
    assert not np.allclose(y, x)
    with pytest.raises(KeyError):
        apply_view(x, ViewParams(seed=1, noise="babble", snr_db=5.0, babble=("zz",)), None, talkers)


def test_telephone_band_removes_high_frequencies() -> None:
    x = _tone().astype(np.float64)
    y = band_limit(x, "telephone", 3400.0)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    k5, k1 = int(5000 * len(x) / SR), int(1000 * len(x) / SR)
    assert spec_y[k5] < 0.01 * spec_x[k5]
    assert spec_y[k1] > 0.7 * spec_x[k1]


def test_rir_bank_rooms_reverberate() -> None:
    pytest.importorskip("pyroomacoustics")
    bank = RirBank(size=2, rt60_s=(0.2, 0.6), seed=0)
    assert [r["rt60_s"] for r in bank.rooms] == [0.2, 0.6]
    # a longer RT60 keeps more energy after 50 ms
    tail = [float(np.sum(h[800:] ** 2) / np.sum(h**2)) for h in bank.rirs]
    assert tail[1] > tail[0]
    x = np.zeros(32000, np.float32)
    x[1000] = 0.5
    y = apply_view(x, ViewParams(seed=0, rir=1), bank, {})
    assert len(y) == len(x) and np.count_nonzero(np.abs(y) > 1e-4) > 1000


def test_voice_task_mixes_clean_windows_and_labelled_views(tmp_path) -> None:  # noqa: ANN001
    """Batches hold both kinds of item; a view's target is ITS teacher embedding (centred)."""
    from edge_runtime.frontend.features import VoiceFrontEnd
    from train.augment import VoiceAugment
    from train.datasets import Sample
    from train.prepare import VoiceSet
    from train.room_views import RoomViews
    from train.tasks import VoiceTask

    fe = VoiceFrontEnd()
    n = fe.window_samples
    rng = np.random.default_rng(0)
    samples = [Sample(f"s{i}", tmp_path / f"{i}.flac", modality="voice") for i in range(2)]
    audio = [(0.1 * rng.standard_normal(n + 16000)).astype(np.float32) for _ in samples]
    starts = [np.array([0, 16000]) for _ in samples]
    win_t = [rng.random((2, 256)).astype(np.float32) for _ in samples]
    data = VoiceSet(samples, audio, starts, win_t, rng.random((2, 256)).astype(np.float32))
    views = RoomViews(np.array([0, 1]), np.array([16000, 0]),
                      [ViewParams(seed=1, noise="fan", snr_db=5.0), ViewParams(seed=2, band="telephone",
                                                                            band_hz=3400.0)],
                      rng.random((2, 256)).astype(np.float32), None, {}, 0)  # type: ignore[arg-type]
    task = VoiceTask(data, data, fe, VoiceAugment(short_p=0.0), views)
    assert len(task) == 4 + 2
    x, target, labels = task.batch(np.array([4, 5, 0]), np.random.default_rng(0))
    assert x.shape == (3, 200, 64) and labels.tolist() == [0, 1, 0]
    want = views.teacher[0] - task.teacher_mean
    assert np.allclose(target[0].numpy(), want / np.linalg.norm(want), atol=1e-6)


def test_narrowband_keeps_the_lows_that_telephone_cuts() -> None:
    t = np.arange(32000) / SR
    x = 0.1 * np.sin(2 * np.pi * 150 * t) + 0.05 * np.sin(2 * np.pi * 5000 * t)
    spec_x = np.abs(np.fft.rfft(x))
    k150, k5 = int(150 * len(x) / SR), int(5000 * len(x) / SR)
    nb = np.abs(np.fft.rfft(band_limit(x, "narrowband", 0.0)))
    tel = np.abs(np.fft.rfft(band_limit(x, "telephone", 3400.0)))
    assert nb[k5] < 0.01 * spec_x[k5] and tel[k5] < 0.01 * spec_x[k5]
    assert nb[k150] > 0.9 * spec_x[k150]
    assert tel[k150] < 0.5 * spec_x[k150]


def test_default_bands_draw_the_views_cached_before_bands_existed() -> None:
    """Keys of 300 views from the room-v1 code (before `bands`): the cached targets stay valid."""
    import hashlib

    pool = [f"h{i}" for i in range(10)]
    keys = "\n".join(RoomAugment().sample(s, 48, pool).key() for s in range(300))
    assert hashlib.sha256(keys.encode()).hexdigest() == (
        "6091a384d95b0e2f8d84df2b24148711fd820c67fa0368070db79365c307bdaa")


def test_bands_from_config_and_unknown_band_refused() -> None:
    from edge_runtime.errors import ConfigError
    from train.config import CONFIG_DIR, load_config
    from train.tasks import room_augment

    cfg = load_config(CONFIG_DIR / "voice_distill_door_v2.yaml", "voice_distill.yaml")
    aug = room_augment(cfg)
    assert aug.bands == ("telephone", "mems", "narrowband") and aug.band_p == 0.6
    assert cfg["loss"]["classification"] == 0.02 and cfg["augment"]["short_p"] == 0.4
    drawn = {aug.sample(s, 48, []).band for s in range(300)}
    assert drawn == {"none", "telephone", "mems", "narrowband"}
    with pytest.raises(ConfigError, match="room.bands"):
        room_augment(load_config(CONFIG_DIR / "voice_distill_door_v2.yaml", "x",
                                 ["room.bands=[telephone,walkie]"]))
    with pytest.raises(ConfigError, match="room.bands"):
        RoomAugment(bands=())


def test_clean_band_views_only_limit_the_band() -> None:
    """Band-only views: no noise, room or speed; deterministic; the 5 kHz tone is gone."""
    aug = RoomAugment(clean_band_views=1)
    views = [aug.sample_clean_band(s) for s in range(100)]
    assert views == [aug.sample_clean_band(s) for s in range(100)]
    assert {v.band for v in views} == {"narrowband", "telephone"}
    assert all(v.noise == "none" and v.rir == -1 and v.speed == 1.0 for v in views)
    x = _tone()
    y = apply_view(x, next(v for v in views if v.band == "narrowband"), None, {}).astype(np.float64)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    k5 = int(5000 * len(x) / SR)
    assert len(y) == len(x) and spec_y[k5] < 0.05 * spec_x[k5]


def test_clean_band_settings_are_checked() -> None:
    with pytest.raises(Exception, match="clean_bands"):
        RoomAugment(clean_bands=("fm-radio",))
    with pytest.raises(Exception, match="clean_band_views"):
        RoomAugment(clean_band_views=-1)
    with pytest.raises(Exception, match="clean_band_target"):
        RoomAugment(clean_band_target="noisy")


def test_clean_band_target_teaches_band_views_the_full_band_window() -> None:
    """`clean_band_target: clean`: a band-only view takes its window's clean target; mixed door
    views keep their own, and a view off the teacher's windows is refused, not kept silently."""
    from edge_runtime.errors import DatasetError
    from train.room_views import RoomViews

    rng = np.random.default_rng(0)
    starts = [np.array([0, 16000]), np.array([0])]
    win_t = [rng.random((2, 256)).astype(np.float32), rng.random((1, 256)).astype(np.float32)]
    own = rng.random((3, 256)).astype(np.float32)
    views = RoomViews(np.array([0, 0, 1]), np.array([16000, 16000, 0]),
                      [ViewParams(seed=1, noise="fan", snr_db=5.0),
                       ViewParams(seed=2, band="narrowband", band_hz=4000.0),
                       ViewParams(seed=3, band="telephone", band_hz=3400.0)],
                      own.copy(), None, {}, 0, np.array([False, True, True]))  # type: ignore[arg-type]
    assert views.teach_band_views_clean(starts, win_t) == 2
    assert np.array_equal(views.teacher[0], own[0])
    assert np.array_equal(views.teacher[1], win_t[0][1]) and np.array_equal(views.teacher[2], win_t[1][0])
    views.start[2] = 8000
    with pytest.raises(DatasetError, match="no teacher window at sample 8000"):
        views.teach_band_views_clean(starts, win_t)


def test_utterance_mix_teaches_clean_windows_the_speakers_utterance_embedding(tmp_path) -> None:  # noqa: ANN001
    """`targets.utterance_mix`: a clean window's target moves to its utterance's teacher
    embedding by the mix; a labelled view keeps its own target; bad values are refused."""
    from edge_runtime.errors import ConfigError
    from edge_runtime.frontend.features import VoiceFrontEnd
    from train.augment import VoiceAugment
    from train.datasets import Sample
    from train.prepare import VoiceSet
    from train.room_views import RoomViews
    from train.tasks import VoiceTask, utterance_mix

    fe = VoiceFrontEnd()
    rng = np.random.default_rng(1)
    samples = [Sample(f"s{i}", tmp_path / f"{i}.flac", modality="voice") for i in range(2)]
    audio = [(0.1 * rng.standard_normal(fe.window_samples + 16000)).astype(np.float32)
             for _ in samples]
    win_t = [rng.random((2, 256)).astype(np.float32) for _ in samples]
    utt_t = rng.random((2, 256)).astype(np.float32)
    data = VoiceSet(samples, audio, [np.array([0, 16000])] * 2, win_t, utt_t)
    views = RoomViews(np.array([1]), np.array([0]), [ViewParams(seed=1, noise="fan", snr_db=5.0)],
                      rng.random((1, 256)).astype(np.float32), None, {}, 0)  # type: ignore[arg-type]

    def target(mix: float, item: int) -> tuple[np.ndarray, VoiceTask]:
        task = VoiceTask(data, data, fe, VoiceAugment(short_p=0.0), views, utterance_mix=mix)
        return task.batch(np.array([item]), np.random.default_rng(0))[1][0].numpy(), task

    def centred(v: np.ndarray, task: VoiceTask) -> np.ndarray:
        c = v - task.teacher_mean
        return c / np.linalg.norm(c)

    t0, task = target(0.0, 3)            # utterance 1, window 1
    t1, _ = target(1.0, 3)
    th, _ = target(0.5, 3)
    assert np.allclose(t0, centred(win_t[1][1], task), atol=1e-6)
    assert np.allclose(t1, centred(utt_t[1], task), atol=1e-6)
    assert np.allclose(th, centred(0.5 * win_t[1][1] + 0.5 * utt_t[1], task), atol=1e-6)
    assert not np.allclose(t0, t1, atol=1e-3)
    v1, _ = target(1.0, 4)               # the labelled view keeps the teacher's view target
    assert np.allclose(v1, centred(views.teacher[0], task), atol=1e-6)

    assert utterance_mix({}) == 0.0 and utterance_mix({"targets": {"utterance_mix": 0.25}}) == 0.25
    with pytest.raises(ConfigError, match="utterance_mix must be in"):
        utterance_mix({"targets": {"utterance_mix": 1.5}})
    with pytest.raises(ConfigError, match="unknown key"):
        utterance_mix({"targets": {"utterance_mixx": 0.5}})


def test_speaker_mix_teaches_clean_windows_the_speakers_mean_over_recordings(tmp_path) -> None:  # noqa: ANN001
    """`targets.speaker_mix`: a clean window's target moves to the normalised mean of its
    speaker's recording embeddings (so two recordings of one person share it), a one-recording
    speaker gets that recording's embedding; the mixes are checked together."""
    from edge_runtime.errors import ConfigError
    from edge_runtime.frontend.features import VoiceFrontEnd
    from train.augment import VoiceAugment
    from train.datasets import Sample
    from train.prepare import VoiceSet
    from train.tasks import VoiceTask, speaker_mix

    fe = VoiceFrontEnd()
    rng = np.random.default_rng(2)
    samples = [Sample(name, tmp_path / f"{i}.flac", modality="voice")
               for i, name in enumerate(["anna", "anna", "ben"])]
    audio = [(0.1 * rng.standard_normal(fe.window_samples + 16000)).astype(np.float32)
             for _ in samples]
    win_t = [rng.standard_normal((2, 256)).astype(np.float32) for _ in samples]
    utt_t = rng.standard_normal((3, 256)).astype(np.float32)
    utt_t /= np.linalg.norm(utt_t, axis=1, keepdims=True)  # Resemblyzer's are unit vectors
    data = VoiceSet(samples, audio, [np.array([0, 16000])] * 3, win_t, utt_t)

    def target(utt: float, spk: float, item: int) -> tuple[np.ndarray, VoiceTask]:
        task = VoiceTask(data, data, fe, VoiceAugment(short_p=0.0), None, utterance_mix=utt,
                         speaker_mix=spk)
        return task.batch(np.array([item]), np.random.default_rng(0))[1][0].numpy(), task

    def centred(v: np.ndarray, task: VoiceTask) -> np.ndarray:
        c = v - task.teacher_mean
        return c / np.linalg.norm(c)

    anna = (utt_t[0] + utt_t[1]) / np.linalg.norm(utt_t[0] + utt_t[1])
    a0, task = target(0.0, 1.0, 0)       # anna's first recording, window 0
    a1, _ = target(0.0, 1.0, 3)          # anna's second recording, window 1
    assert np.allclose(a0, centred(anna, task), atol=1e-6)
    assert np.allclose(a0, a1, atol=1e-6)
    b, _ = target(0.0, 1.0, 4)           # ben: one recording
    assert np.allclose(b, centred(utt_t[2], task), atol=1e-6)
    mixed, _ = target(0.25, 0.5, 1)      # anna's first recording, window 1
    assert np.allclose(mixed, centred(0.25 * win_t[0][1] + 0.25 * utt_t[0] + 0.5 * anna, task),
                       atol=1e-6)
    off, _ = target(0.0, 0.0, 0)
    assert np.allclose(off, centred(win_t[0][0], task), atol=1e-6)

    assert speaker_mix({}) == 0.0 and speaker_mix({"targets": {"speaker_mix": 0.5}}) == 0.5
    with pytest.raises(ConfigError, match="speaker_mix must be in"):
        speaker_mix({"targets": {"speaker_mix": -0.1}})
    with pytest.raises(ConfigError, match="must be <= 1"):
        speaker_mix({"targets": {"utterance_mix": 0.6, "speaker_mix": 0.6}})
    no_utt = VoiceSet(samples, audio, [np.array([0, 16000])] * 3, win_t, None)
    with pytest.raises(ConfigError, match="speaker_mix needs the teacher's utterance"):
        VoiceTask(no_utt, no_utt, fe, VoiceAugment(), None, speaker_mix=0.5)


def test_views_without_a_second_talker_keep_their_cache_keys() -> None:
    """The talker fields joined ViewParams after thousands of targets were cached under its
    key: a view without a talker must keep the key it had before them (written out here)."""
    p = ViewParams(seed=7, speed=0.95, rir=3, noise="fan", snr_db=12.5, band="mems",
                   band_hz=6000.0, gain_db=-1.5)
    assert p.key() == ('{"babble":[],"band":"mems","band_hz":6000.0,"gain_db":-1.5,"noise":"fan",'
                       '"rir":3,"seed":7,"snr_db":12.5,"speed":0.95}')
    assert "talker" in ViewParams(seed=7, talker="abc", talker_db=3.0).key()


def test_talker_views_add_one_other_speaker_below_the_window() -> None:
    """A second-talker view: deterministic, the talker from the pool only, `talker_db` below
    the window's speech, nothing else added."""
    aug = RoomAugment(talker_views=1)
    pool = [f"h{i}" for i in range(5)]
    views = [aug.sample_talker(s, pool) for s in range(100)]
    assert views == [aug.sample_talker(s, pool) for s in range(100)]
    assert {v.talker for v in views} == set(pool)
    assert all(0.0 <= v.talker_db <= 10.0 and v.noise == "none" and v.rir == -1 and v.speed == 1.0
               and v.band == "none" for v in views)
    x = _tone()
    other = (0.3 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32)
    p = ViewParams(seed=4, talker="h1", talker_db=6.0)
    y = apply_view(x, p, None, {"h1": other}).astype(np.float64)
    ratio = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x) ** 2))
    assert len(y) == len(x) and ratio == pytest.approx(6.0, abs=0.3)
    assert np.array_equal(y, apply_view(x, p, None, {"h1": other}))


def test_talker_settings_are_checked() -> None:
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="talker_views"):
        RoomAugment(talker_views=-1)
    with pytest.raises(ConfigError, match="talker_db"):
        RoomAugment(talker_db=(10.0, 0.0))
    with pytest.raises(ConfigError, match="two training speakers"):
        RoomAugment(talker_views=1).sample_talker(0, [])
