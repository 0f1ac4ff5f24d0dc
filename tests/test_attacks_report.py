"""The attack benchmark's tables from per-attempt rows (synthetic rows: the report logic only;
the attempts themselves run through the real Verifier in `benchmarks/attacks.py`)."""

from __future__ import annotations

from benchmarks.attacks_report import clopper_pearson, render, summarise

MODES = {"face+liveness": {"target_far": 0.01, "avsync_threshold": 1.38, "min_speech_s": 0.5,
                           "voice_veto": "calibrated, q=0.02 (cross-fitted)"},
         "face+liveness, FAR 0.001": {"target_far": 0.001, "avsync_threshold": 1.38,
                                      "min_speech_s": 0.5,
                                      "voice_veto": "calibrated, q=0.02 (cross-fitted)"}}


def _att(who: str, expected: str | None, granted: dict[str, bool], identity: str | None = None):
    return {"who": who, "expected": expected, "speech_s": 2.0,
            **{m: {"granted": g, "identity": identity if g else None,
                   "reason": "[face+liveness] granted" if g else
                   "[face+liveness] face does not identify anyone: best x 0.5"}
               for m, g in granted.items()}}


def _result() -> dict:
    genuine = [_att(f"p{i % 5}", f"p{i % 5}", {"face+liveness": i != 0,
                                                "face+liveness, FAR 0.001": i > 2},
                    identity=f"p{i % 5}") for i in range(20)]
    zero = [_att(f"s{i % 4}", None, {"face+liveness": i == 7, "face+liveness, FAR 0.001": False})
            for i in range(40)]
    return {"kinds": {"genuine": genuine, "zero-effort": zero}, "grid": {}, "modes": MODES,
            "gallery_size": 5, "strangers": 4, "people": 9, "machine": {"cpu": "test"},
            "precision": "fp32", "default_mode": "face+liveness", "done": 60, "planned": 60,
            "date": "2026-12-01"}


def test_rates_count_each_mode_on_the_same_attempts():
    s = summarise(_result())
    assert s["face+liveness"]["genuine"]["errors"] == 1
    assert s["face+liveness, FAR 0.001"]["genuine"]["errors"] == 3
    assert s["face+liveness"]["zero-effort"]["errors"] == 1
    assert s["face+liveness"]["zero-effort"]["n"] == 40
    lo, hi = s["face+liveness"]["zero-effort"]["ci"]
    assert (lo, hi) == clopper_pearson(1, 40) and lo < 1 / 40 < hi
    assert s["face+liveness"]["genuine"]["denied_because"] == {"face does not identify anyone": 1}


def test_a_grant_of_the_wrong_person_is_a_bona_fide_error():
    res = _result()
    res["kinds"]["genuine"][1]["face+liveness"]["identity"] = "p3"  # granted, but as someone else
    assert summarise(res)["face+liveness"]["genuine"]["errors"] == 2


def test_report_names_the_far_of_each_mode_the_date_and_the_fmr_gallery():
    res = _result()
    text = render(res, summarise(res))
    assert "## Mode `face+liveness, FAR 0.001` (FAR target 0.001," in text
    assert "| zero-effort (ARTIFICIAL) | FMR (gallery 5) | 1 / 40 | 2.50% |" in text
    assert "Date: 2026-12-01." in text


def test_a_live_loop_variant_reports_the_speech_its_decisions_took():
    res = _result()
    res["modes"]["face+liveness, live looks"] = {
        **MODES["face+liveness"], "decisive_speech_s": 2.0,
        "sequential": "looks every 0.5 s of speech"}
    for i, r in enumerate(res["kinds"]["genuine"]):
        r["face+liveness, live looks"] = {"granted": True, "identity": r["expected"],
                                          "reason": "[face+liveness] granted",
                                          "decided_at_s": 2.0 + (i % 3), "looks": 4}
    s = summarise(res)
    assert s["face+liveness, live looks"]["genuine"]["decided_at_s_median"] == 3.0
    assert "zero-effort" not in s["face+liveness, live looks"]  # no rows, no row
    text = render(res, s)
    assert "a look grants from 2 s of speech on): speech heard at the decision, median " \
        "(looks per attempt, mean): genuine 3.00 s (4.0)" in text


def test_the_rerun_line_reproduces_the_run_it_reports():
    res = _result()
    assert "--out benchmarks/attacks.md`" in render(res, summarise(res))
    res.update(precision="int8", face_tier="large", voice_tier="large")
    text = render(res, summarise(res))
    assert ("--out benchmarks/attacks_large_voice_large_int8.md --face-tier large "
            "--voice-tier large --precision int8`") in text


def test_report_says_how_the_door_was_enrolled_old_runs_included():
    """A run from before enrolment collected 15 s of speech re-renders as it was made."""
    res = _result()
    assert ("5 enrolled (2 photos + 3 utterances each; the first half of the seeded order)"
            in render(res, summarise(res)))
    res |= {"enrol_voice_s": 15.0, "enrol_utterances": {"p0": 5, "p1": 7, "p2": 6}}
    assert ("5 enrolled (2 photos + their first utterances until 15 s of voiced speech: 5-7 "
            "utterances, 6.0 on average; the first half") in render(res, summarise(res))


def test_a_run_with_the_other_half_enrolled_says_so_and_reruns_as_it_was_made():
    res = _result() | {"enrol_half": "second", "face_tier": "large"}
    text = render(res, summarise(res))
    assert "--out benchmarks/attacks_large_half2.md --face-tier large --enrol-half second`" \
        in text
    assert "; the second half of the seeded order)" in text


def test_the_live_door_over_halvings_is_reported_per_halving_and_pooled():
    """Rows decided with each halving's veto: the report gives each rate and the pooled one;
    a record without halvings renders as before."""
    from benchmarks.attacks_report import halving_modes, halving_summary

    res = _result()
    assert halving_modes(res) == [] and halving_summary(res) == {}
    assert "halvings of the people" not in render(res, summarise(res))
    modes = ["face+liveness", "face+liveness, halving 1", "face+liveness, halving 2"]
    res["halvings"] = {"count": 3, "modes": modes}
    for i, r in enumerate(res["kinds"]["genuine"]):  # halving 1 turns away 4, halving 2 none
        r[modes[1]] = {"granted": i >= 4, "identity": r["expected"]}
        r[modes[2]] = {"granted": True, "identity": r["expected"]}
    for r in res["kinds"]["zero-effort"]:
        r[modes[1]] = r[modes[2]] = {"granted": False}
    h = halving_summary(res)
    assert h["genuine"]["per_halving"] == [1 / 20, 4 / 20, 0.0]
    assert h["genuine"]["pooled"] == 5 / 60
    assert (h["genuine"]["min"], h["genuine"]["max"]) == (0.0, 0.2)
    assert h["zero-effort"]["per_halving"] == [1 / 40, 0.0, 0.0]
    text = render(res, summarise(res))
    assert "## The live door over 3 halvings of the people" in text
    assert "| genuine | 8.33% | 0.00%-20.00% | 5.00%, 20.00%, 0.00% |" in text


def test_halving_zero_is_the_split_every_mode_uses_and_the_others_differ():
    import numpy as np

    from benchmarks.attacks_doors import halving_folds, halving_mode

    people = [{"name": f"p{i}"} for i in range(30)]
    folds = halving_folds(people, seed=0, halvings=5)
    order = np.random.default_rng(7).permutation(30)  # the runs before 2026-12-03
    assert folds[0] == {people[i]["name"]: k % 2 for k, i in enumerate(order)}
    assert all(sum(f.values()) == 15 for f in folds)
    assert len({tuple(sorted(f.items())) for f in folds}) == 5
    assert halving_folds(people, seed=0, halvings=5) == folds  # reproducible
    assert halving_mode(0) == "face+liveness, live door"
    assert halving_mode(3) == "face+liveness, live door, halving 3"


def test_a_checkpoint_replaces_each_file_whole_and_a_failure_leaves_the_last_one(
        tmp_path, monkeypatch):
    import gzip
    import json

    import pytest

    import benchmarks.attacks as attacks

    out = tmp_path / "attacks.md"
    attacks.write_record(_result(), out)
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(first) == ["attacks.json.gz", "attacks.md", "attacks.png"]
    assert json.loads(gzip.decompress(first["attacks.json.gz"]))["done"] == 60

    def no_plot(summary, fh):
        fh.write(b"half a png")  # the plot dies after starting its file
        raise OSError("disk full")

    monkeypatch.setattr(attacks, "plot", no_plot)
    with pytest.raises(OSError, match="disk full"):
        attacks.write_record({**_result(), "done": 61}, out)
    now = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(now) == sorted(first)  # no temporary file left behind
    assert now["attacks.png"] == first["attacks.png"]  # the last whole plot, not half of one
    assert json.loads(gzip.decompress(now["attacks.json.gz"]))["done"] == 61


def test_an_int8_report_says_which_arithmetic_decided_it():
    """The INT8 thresholds were measured with the exact QDQ arithmetic; a run through a CPU's
    saturating int8 kernels judged other embeddings (2026-12-03), so the report names it."""
    res = _result() | {"precision": "int8", "exact_int8": ["face_int8", "voice_int8"]}
    assert "exact QDQ arithmetic (what TensorRT computes" in render(res, summarise(res))
    res |= {"exact_int8": [], "int8_dot": ["avx512_vnni"]}
    text = render(res, summarise(res))
    assert "onnxruntime's int8 kernels, faithful on this CPU (avx512_vnni)" in text
    assert "exact QDQ" not in text
    assert "int8 kernels" not in render(_result(), summarise(_result()))  # FP32 says nothing
