"""`edgepin calibrate` end to end on the real fixtures, and the runtime's refusal of its file
once a model changes.

The models are the runtime tests' small ONNX bundle (tests/runtime_models.py: fixed random
projections with the deployed interfaces, including pin_face/pin_voice/faa): the figures they
produce are meaningless and never asserted as accuracy; what is checked is the protocol
(which trials exist, how many, keyed by which model hashes) and the file the runtime loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from runtime_models import build_bundle, face_model

from calibration.calibrate import joint_comparison
from calibration.commands import edgepin_command_line
from calibration.people import person_far_interval
from calibration.scores import TrialScores, fit_calibrations, fit_fuser
from calibration.trials import Embedded, held_out_trials
from edge_runtime.bundle import load_manifest, register_model, sha256_file
from edge_runtime.cli import main
from edge_runtime.models import ModelBundle
from edge_runtime.operating_points import OperatingPoints, load_operating_points

CROSS = {"face", "voice", "pin_face", "pin_voice", "faa"}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, fixtures):
    root = tmp_path_factory.mktemp("calib")
    models = build_bundle(root / "models", cross=True)
    out = models / "operating_points.yaml"
    argv = ["calibrate", "--models", str(models), "--data", str(fixtures), "--out", str(out),
            "--split", "all", "--n-voice", "1", "--min-per-class", "2", "--far", "0.25", "0.01",
            "--bootstrap", "50", "--workers", "1", "--threads", "1", "--coverage-splits", "3",
            "--cache", str(root / "cache"), "--report", str(root / "op.md")]
    rc = main(argv)
    return rc, models, out, root


def test_calibrate_writes_a_file_the_runtime_accepts(calibrated):
    rc, models, out, root = calibrated
    assert rc == 0
    files = {n: sha256_file(models / f"{n}.onnx") for n in CROSS}
    op = load_operating_points(out, files)  # refuses on any hash mismatch
    assert dict(op.model_hashes) == files
    assert set(op.fuser.calibrations) == {"face", "voice", "pin", "faa"}
    assert op.fuser.calibrations["faa"].transform == "logit"
    assert {"+".join(sorted(s)) for s in op.fuser.subsets} == {"face", "voice", "face+voice"}
    # 0.01 needs >= 300 impostors: refused with the count, never a number
    low = [p for p in op.thresholds if p.target_far == 0.01]
    assert low and all(p.threshold is None and "not measurable with" in p.reason for p in low)
    with ModelBundle.load(models) as bundle:  # the default path of the runtime
        assert isinstance(bundle.operating_points, OperatingPoints)


def test_report_counts_follow_the_protocol(calibrated):
    _, _, out, root = calibrated
    report = json.loads((out.parent / "operating_points.report.json").read_text())
    parts = report["sets"]["parts"]
    # 4 speakers x 3 utterances of a few seconds: as the door enrols (15 s of speech, never the
    # last recording) the first 2 enrol -> 1 probe each; paired with 4 of the 6 LFW people
    # (4 photos, 2 enrol -> 2 probes each); pairs alternate halves: 2 persons per half, each
    # with 1 joint probe -> 2 genuine and 2 impostor (vs the other person) per half.
    for h in (0, 1):
        assert parts[f"artificial/{h}"] == {"modalities": ["face", "voice"], "n_genuine": 2,
                                            "n_impostor": 2}
    v = report["sets"]["voice_templates"]
    assert v["until_s"] == 15.0 and v["templates"] == 4
    assert v["recordings_min"] == v["recordings_max"] == 2 and 2 < v["speech_s_min"] < 15
    # 7 GRID clips, each direction: 7 genuine, 42 impostor, 7*6 mixed attacks per claim
    for d in ("fwd", "rev"):
        assert parts[f"grid/{d}"]["n_genuine"] == 7 and parts[f"grid/{d}"]["n_impostor"] == 42
        for owner in ("face-owner", "voice-owner"):
            assert parts[f"grid-mixed-{owner}/{d}"] == {"modalities": ["face", "voice"],
                                                        "n_genuine": 0, "n_impostor": 42}
        assert parts[f"grid-cross/{d}"]["modalities"] == ["faa", "pin"]
        assert parts[f"grid-cross/{d}"]["n_genuine"] == 7
    assert report["cross_modal"]["pin"]["n_genuine"] == 14
    assert len(report["sets"]["artificial_pairs"]) == 4
    for png in report["plots"].values():
        assert Path(png).stat().st_size > 1000
    lo, hi = report["joint"]["artificial_held_out"]["acceptance"]["eer_reduction_ci"]
    assert lo <= hi
    op = yaml.safe_load(out.read_text())  # the file stores the person-level interval too
    shipped = {(c["modalities"], c["target_far"]): c["far_pi_people"]
               for c in report["held_out_check"] if c["run"].startswith("shipped")}
    assert shipped and all(
        t["far_pi_people"] == pytest.approx(shipped[("+".join(t["modalities"]), t["target_far"])])
        for t in op["thresholds"] if t["threshold"] is not None)
    assert report["coverage"]["splits"] == 3
    assert all(p["n"] == 3 for p in report["coverage"]["points"])
    lengths = [row[0] for row in report["calibration"]["voice"]["by_seconds"]]
    assert lengths == [0.75, 1.0, 1.4, 2.0]  # the probe lengths the voice is calibrated at
    assert [q["seconds"] for q in report["voice_by_length"]] == [0.75, 1.0, 1.4]
    # GRID voice probes carry their speech length into the calibration
    assert all(0.5 <= c["voice_seconds"] <= 1.6 for c in report["sets"]["grid_probe_seconds"])
    md = (root / "op.md").read_text()
    assert "ARTIFICIAL" in md and "GRID" in md and "fused EER" in md
    assert "Coverage over 3 random splits" in md and "prediction interval" in md
    assert "Voice calibration by probe length" in md
    assert "not measurable with" in md


def test_stale_operating_points_refused_through_the_cli(calibrated, fixtures, capsys):
    _, models, out, root = calibrated
    stale = root / "stale_models"
    stale.mkdir()
    for e in load_manifest(models).values():
        (stale / e.file).write_bytes(e.path.read_bytes())
    (stale / "manifest.json").write_bytes((models / "manifest.json").read_bytes())
    (stale / "operating_points.yaml").write_bytes(out.read_bytes())
    face_model(stale / "face.onnx", seed=9)  # a retrained face model
    register_model(stale, "face", "face.onnx", dim=128, precision="fp32")
    photo = next((fixtures / "lfw" / "Tony_Blair").glob("*.jpg"))
    rc = main(["enroll", "someone", "--models", str(stale), "--face", str(photo),
               "--gallery", str(root / "g.db"), "--key-file", str(root / "g.key"),
               "--create-key"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "is stale" in err and "face" in err and "edgepin calibrate" in err
    assert not (root / "g.db").exists()  # refused before any gallery was touched


def test_missing_data_folder_is_named(tmp_path, calibrated, fixtures, capsys):
    _, models, _, _ = calibrated
    data = tmp_path / "data"
    data.mkdir()
    (data / "lfw").symlink_to(fixtures / "lfw")
    (data / "speechocean762").symlink_to(fixtures / "speechocean762")
    rc = main(["calibrate", "--models", str(models), "--data", str(data),
               "--out", str(tmp_path / "op.yaml")])
    assert rc == 2  # too few trials for anything at the default floor, and no clips
    err = capsys.readouterr().err
    assert "nothing could be calibrated" in err and f"no grid/ or clips/ folder in {data}" in err


def test_negative_enrolment_speech_is_refused_before_any_work(tmp_path, calibrated, capsys):
    _, models, _, _ = calibrated
    rc = main(["calibrate", "--models", str(models), "--data", str(tmp_path),
               "--out", str(tmp_path / "op.yaml"), "--voice-enrol-s", "-1"])
    assert rc == 2
    assert "--voice-enrol-s must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "op.yaml").exists()


def _embedded(n_ids: int, per_id: int, dim: int, rng: np.random.Generator, prefix: str
              ) -> Embedded:
    ids = [f"{prefix}{i:02d}" for i in range(n_ids) for _ in range(per_id)]
    centres = rng.standard_normal((n_ids, dim))
    emb = np.repeat(centres, per_id, axis=0) + 0.5 * rng.standard_normal((len(ids), dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Embedded(ids, emb.astype(np.float32), [f"{x}/{k}" for k, x in enumerate(ids)])


def test_every_comparison_is_counted_once_and_halves_never_mix():
    rng = np.random.default_rng(0)
    face = _embedded(9, 5, 16, rng, "f")
    face = Embedded(face.identities + ["lonely"], np.vstack([face.emb, face.emb[:1]]),
                    face.sources + ["lonely/0"])  # one photo: probes only, never enrolled
    voice = _embedded(4, 6, 8, rng, "v")
    parts, people, info = held_out_trials(face, voice, n_face=2, n_voice=3, seed=0)
    halves = info["halves"]
    for name, t in parts.items():  # people labels line up with the rows: same person = genuine
        lab = people[name]
        assert lab.shape == (np.asarray(t.genuine).size, 2)
        np.testing.assert_array_equal(lab[:, 0] == lab[:, 1], t.genuine)
    assert not set(halves["0"]["face_identities"]) & set(halves["1"]["face_identities"])
    for h in (0, 1):
        fids = halves[str(h)]["face_identities"]
        vids = halves[str(h)]["voice_identities"]
        n_ft = sum(1 for i in fids if i != "lonely")
        face_probes = sum(3 if i != "lonely" else 1 for i in fids)
        voice_probes = 3 * len(vids)
        t = TrialScores.concat([parts[k] for k in (f"lfw/{h}", f"speechocean/{h}",
                                                   f"artificial/{h}") if k in parts])
        assert t.counts(["face"]) == (3 * n_ft, face_probes * n_ft - 3 * n_ft)
        assert t.counts(["voice"]) == (voice_probes, voice_probes * (len(vids) - 1))
        # 2 persons per half, 3 joint probes each (min of 3 face and 3 voice probes)
        assert parts[f"artificial/{h}"].counts(["face", "voice"]) == (6, 6)


def test_fusion_of_two_independent_scores_beats_each_on_the_joint_set():
    rng = np.random.default_rng(1)
    n_g, n_i = 400, 4000
    gen = np.r_[np.ones(n_g, bool), np.zeros(n_i, bool)]
    face = np.where(gen, 1.5, 0.0) + rng.standard_normal(n_g + n_i)
    voice = np.where(gen, 1.5, 0.0) + rng.standard_normal(n_g + n_i)
    t = TrialScores({"face": face, "voice": voice}, gen)
    cal = fit_calibrations(t)
    op = OperatingPoints({"face": "0" * 64}, "0" * 64, fit_fuser(t, cal), ())
    res = joint_comparison(op, t)
    # d' = 1.5 each -> EER ~ Phi(-0.75) = 22.7%; fused d' = 1.5 * sqrt(2) -> EER ~ 14.4%
    assert 0.19 < res["face"]["eer"] < 0.27 and 0.19 < res["voice"]["eer"] < 0.27
    assert 0.11 < res["face+voice"]["eer"] < 0.18
    assert res["acceptance"]["fused_below_best_single"]
    assert res["acceptance"]["eer_reduction"] == pytest.approx(
        min(res["face"]["eer"], res["voice"]["eer"]) - res["face+voice"]["eer"])
    assert yaml.safe_dump(res)  # plain, serialisable values


def test_person_level_interval_sees_what_trial_resampling_cannot():
    # 20 probe people x 10 templates x 10 trials; every false accept comes from ONE person
    rng = np.random.default_rng(2)
    probe = np.repeat([f"p{i}" for i in range(20)], 100)
    tmpl = np.tile(np.repeat([f"t{j}" for j in range(10)], 10), 20)
    llr = rng.uniform(-5, -1, probe.size)
    llr[:20] = 3.0  # person p0, 20 of its trials above the threshold 0
    people = np.stack([probe, tmpl], 1)
    lo, hi = person_far_interval(llr, people, 0.0, n_bootstrap=400, seed=0, confidence=0.95)
    far = 20 / probe.size
    assert lo == 0.0  # a resample without p0 (p ~ (19/20)^20 = 0.36) has no false accept
    assert hi > 2 * far  # p0 drawn twice or more
    # the binomial trial-level interval around 1% with 2000 trials would be ~[0.6%, 1.5%]
    llr2 = llr.copy()
    llr2[:20] = -3.0
    spread = [100 * p + 10 * (p % 10) for p in range(20)]  # 1 per probe, 2 per template
    llr2[spread] = 3.0  # the same 20 false accepts spread over all the people
    lo2, hi2 = person_far_interval(llr2, people, 0.0, n_bootstrap=400, seed=0, confidence=0.95)
    assert 0.0 < lo2 < far < hi2 and (hi2 - lo2) < (hi - lo) / 2


def test_site_set_too_small_for_one_head_calibrates_the_rest(calibrated, fixtures, tmp_path,
                                                            capsys):
    """A site's own small set (faces/, voices/, 3 clips/: real fixtures) with a trial floor
    the voice set cannot meet: the file is written for the rest, the voice is named as
    skipped, and with --base the voice keeps the base file's calibration, marked as such."""
    _, models, base, _ = calibrated
    site = tmp_path / "site"
    (site / "clips").mkdir(parents=True)
    (site / "faces").symlink_to(fixtures / "lfw")
    (site / "voices").symlink_to(fixtures / "speechocean762")
    for clip in sorted((fixtures / "grid").glob("*.mpg"))[:3]:
        (site / "clips" / clip.name).symlink_to(clip)
    out = tmp_path / "op.yaml"
    argv = ["calibrate", "--models", str(models), "--data", str(site), "--out", str(out),
            "--split", "all", "--n-voice", "1", "--min-per-class", "5", "--far", "0.25",
            "--bootstrap", "50", "--workers", "1", "--threads", "1", "--coverage-splits", "0",
            "--cache", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    skipped = [ln.strip() for ln in printed.splitlines() if ln.strip().startswith("skipped")]
    assert any("'voice'" in ln and "need >= 5 of each" in ln for ln in skipped), printed
    report = json.loads((tmp_path / "op.report.json").read_text())
    files = {n: sha256_file(models / f"{n}.onnx") for n in CROSS}
    alone = load_operating_points(out, files)
    assert "voice" not in alone.fuser.calibrations
    assert {"face", "pin", "faa"} <= set(alone.fuser.calibrations)
    assert report["base"] is None and any("'voice'" in s for s in report["skipped"])
    # the same set started from the shipped-style file: voice (and what needs it) from base
    based = tmp_path / "based.yaml"
    assert main([*argv[:6], str(based), *argv[7:], "--base", str(base)]) == 0
    printed = capsys.readouterr().out
    assert "kept voice" in printed and "(not measured here)" in printed
    merged = load_operating_points(based, files)
    first = load_operating_points(base, files)
    assert merged.fuser.calibrations["voice"] == first.fuser.calibrations["voice"]
    assert merged.fuser.calibrations["face"] == alone.fuser.calibrations["face"]
    info = json.loads((tmp_path / "based.report.json").read_text())["base"]
    assert "voice" in info["calibrations_from_base"] and "face" in info["calibrations_refit"]
    # a base threshold on the re-fitted face LLR is never kept unless re-set on site data
    kept = {tuple(k.split(" @ ")[0].split("+")) for k in info["thresholds_from_base"]}
    assert not any("face" in k for k in kept)
    # asked only for FAR 0.01 (12 site impostors cannot set it): the face calibration the site
    # could fit would leave the base's face threshold unusable, so both stay the base's
    strict = tmp_path / "strict.yaml"
    argv_strict = [a if a != "0.25" else "0.01" for a in argv]
    assert main([*argv_strict[:6], str(strict), *argv_strict[7:], "--base", str(base)]) == 0
    assert "kept base face: site trials calibrate face but set none" in capsys.readouterr().out
    op = load_operating_points(strict, files)
    assert op.fuser.calibrations["face"] == first.fuser.calibrations["face"]
    assert op.threshold_for(("face",), 0.25) == first.threshold_for(("face",), 0.25)


def test_site_data_with_no_known_folder_is_named(calibrated, tmp_path, capsys):
    _, models, _, _ = calibrated
    (tmp_path / "empty").mkdir()
    rc = main(["calibrate", "--models", str(models), "--data", str(tmp_path / "empty"),
               "--out", str(tmp_path / "op.yaml")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "holds none of lfw/faces, speechocean762/voices, grid/clips" in err


@pytest.mark.parametrize(("argv0", "expected"), [
    ("/usr/local/bin/edgepin", "edgepin calibrate --out 'a b.yaml'"),
    ("/work/repo/edge_runtime/cli/__main__.py", "edgepin calibrate --out 'a b.yaml'"),
    ("/usr/lib/python3/pytest", ""),
    ("/work/repo/other/cli/__main__.py", ""),
])
def test_report_names_the_command_however_the_cli_was_started(argv0, expected):
    # the ship script runs `python -m edge_runtime.cli` in a checkout; the report's provenance
    # line went missing there because only a program named "edgepin" was recognised
    assert edgepin_command_line([argv0, "calibrate", "--out", "a b.yaml"]) == expected
    assert edgepin_command_line([]) == ""
