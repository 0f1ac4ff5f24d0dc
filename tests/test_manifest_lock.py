"""The model manifest under concurrent writers (scripts/ship_student.sh runs two lanes at once).

Each lane registers its own models (heads in one, INT8 files in the other) into the same
`models/manifest.json`. A read-modify-write without a lock loses whichever entry was written
between another writer's read and its replace; these tests run real processes against a real
folder, no mocks.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from edge_runtime.bundle import MANIFEST, load_manifest, register_model, set_default_face_tier
from edge_runtime.errors import ModelError

WRITERS = 4
ROUNDS = 25


def _writer(root: str, k: int, start: mp.synchronize.Event) -> None:
    start.wait()
    for r in range(ROUNDS):
        f = Path(root) / f"m{k}_{r}.onnx"
        f.write_bytes(f"{k}-{r}".encode())
        register_model(root, f"m{k}_{r}", f.name, writer=k)


def test_parallel_writers_lose_no_entry(tmp_path):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k, start)) for k in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"writer exited with {p.exitcode}"
    data = json.loads((tmp_path / MANIFEST).read_text())
    want = {f"m{k}_{r}" for k in range(WRITERS) for r in range(ROUNDS)}
    assert set(data["models"]) == want, f"lost: {sorted(want - set(data['models']))[:10]}"
    # and every entry still verifies against its file
    entries = load_manifest(tmp_path)
    for e in entries.values():
        assert e.verified_path().read_bytes() == f"{e.meta['writer']}-{e.name.split('_')[1]}".encode()


def test_a_broken_manifest_is_named_and_left_as_it_was(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"a")
    (tmp_path / MANIFEST).write_text('{"format": 1, "models": {')  # truncated by a crash
    before = (tmp_path / MANIFEST).read_bytes()
    with pytest.raises(ModelError, match="unreadable model manifest"):
        register_model(tmp_path, "a", "a.onnx")
    with pytest.raises(ModelError, match=str(tmp_path / MANIFEST)):
        set_default_face_tier(tmp_path, {"cuda": "large"})
    assert (tmp_path / MANIFEST).read_bytes() == before
