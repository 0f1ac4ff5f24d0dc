"""Teacher targets for door-condition views of the training windows, cached.

Each training window gets `views_per_window` door-condition views, `clean_band_views`
band-only views and `talker_views` second-talker views (`train.augment_room`); the teacher
embeds each view once. The cache key is the utterance file's sha256, the window offset and the
view's full parameters (`ViewParams.key`, seed included), with the augmentation, RIR-bank and
teacher versions: a second run with the same config computes nothing, a changed parameter or
teacher never reuses a stale target.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from edge_runtime.errors import DatasetError
from train.augment_room import AUG_VERSION, RirBank, RoomAugment, ViewParams, apply_view
from train.cache import ArrayCache
from train.datasets import file_sha256
from train.prepare import VoiceSet

HASH_PREFIX = 16  # babble talkers are named by this many hex digits of their file hash


@dataclass
class RoomViews:
    """Augmented views: (utterance, window start) they come from, parameters, teacher target."""

    utterance: np.ndarray  # (K,) index into the VoiceSet
    start: np.ndarray  # (K,) sample offset of the window
    params: list[ViewParams]
    teacher: np.ndarray  # (K, 256)
    bank: RirBank
    talkers: dict[str, np.ndarray]
    computed: int  # how many targets this call had to compute (0 = all from the cache)
    band_only: np.ndarray | None = None  # (K,) True for the band-only views

    def teach_band_views_clean(self, window_starts: list[np.ndarray],
                               window_teacher: list[np.ndarray]) -> int:
        """Band-only views take the clean window's teacher target (`clean_band_target: clean`).

        Returns how many targets were replaced; a view whose window is not a teacher window is
        an error, not a silent keep.
        """
        if self.band_only is None:
            return 0
        chosen = np.flatnonzero(self.band_only)
        for k in chosen:
            u, s = int(self.utterance[k]), int(self.start[k])
            w = np.flatnonzero(window_starts[u] == s)
            if len(w) != 1:
                raise DatasetError(f"band-only view {k}: utterance {u} has no teacher window at "
                                   f"sample {s}")
            self.teacher[k] = window_teacher[u][int(w[0])]
        return len(chosen)

    def audio(self, k: int, wav: np.ndarray, n: int) -> np.ndarray:
        """The k-th view's audio, rebuilt from its parameters."""
        s = int(self.start[k])
        return apply_view(wav[s : s + n], self.params[k], self.bank, self.talkers)


def _view_seed(seed: int, sha: str, start: int, k: int) -> int:
    h = hashlib.sha256(f"{seed}|{sha}|{start}|{k}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def prepare_room_views(data: VoiceSet, cache_dir: str | Path, window_samples: int,
                       augment: RoomAugment, *, views_per_window: int, seed: int) -> RoomViews:
    """Draw the views of every window of `data`, label them with the teacher (cached)."""
    from train.teachers import VoiceTeacher

    bank = RirBank(augment.rir_bank, augment.rt60_s, seed)
    shas = [file_sha256(s.path)[:HASH_PREFIX] for s in data.samples]
    talkers = dict(zip(shas, data.audio, strict=True))
    by_speaker: dict[str, list[str]] = {}
    for s, h in zip(data.samples, shas, strict=True):
        by_speaker.setdefault(s.identity, []).append(h)
    others = {ident: [h for other, hs in by_speaker.items() if other != ident for h in hs]
              for ident in by_speaker}
    utt, starts, params, keys, band_only = [], [], [], [], []
    version = f"{AUG_VERSION}|{bank.version}|{VoiceTeacher.version_string()}"
    band_end = views_per_window + augment.clean_band_views  # views [per_window, band_end): band-only
    for u, (sample, sha) in enumerate(zip(data.samples, shas, strict=True)):
        for start in data.window_starts[u]:
            for k in range(band_end + augment.talker_views):
                vseed = _view_seed(seed, sha, int(start), k)
                band = views_per_window <= k < band_end
                if k < views_per_window:
                    p = augment.sample(vseed, bank.size, others[sample.identity])
                elif band:
                    p = augment.sample_clean_band(vseed)
                else:
                    p = augment.sample_talker(vseed, others[sample.identity])
                utt.append(u)
                band_only.append(band)
                starts.append(int(start))
                params.append(p)
                keys.append(ArrayCache.key(sha, f"roomview@{int(start)}|{p.key()}", version))
    cache = ArrayCache(Path(cache_dir) / "voice_views.sqlite")
    try:
        found = [cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(found) if r is None]
        views = RoomViews(np.array(utt, np.int64), np.array(starts, np.int64), params,
                          np.zeros((len(keys), 256), np.float32), bank, talkers, len(todo),
                          np.array(band_only, bool))
        if todo:
            teacher = VoiceTeacher()
            with Progress(console=Console(stderr=True)) as progress:
                task = progress.add_task(f"room views ({len(todo)} new, {len(keys) - len(todo)} "
                                         "cached)", total=len(todo))
                rows: list[tuple[str, dict[str, np.ndarray]]] = []
                for i in todo:
                    wav = views.audio(i, data.audio[utt[i]], window_samples)
                    found[i] = {"emb": teacher.embed(wav)}
                    rows.append((keys[i], found[i]))
                    if len(rows) == 64:
                        cache.put_many(rows)
                        rows = []
                    progress.advance(task)
                if rows:
                    cache.put_many(rows)
    finally:
        cache.close()
    views.teacher[:] = np.stack([r["emb"] for r in found])  # type: ignore[index]
    return views
