"""`edgepin calibrate`: operating points for a models folder from real data.

Cheap to import (no torch, no numpy work at import): the heavy modules load in the handler.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from edge_runtime.errors import ConfigError
from edge_runtime.frontend.features import FACE_TTA
from edge_runtime.operating_points import (
    DECISIVE_SPEECH_S,
    VOICE_CONFIRM_UNTIL_S,
    VOICE_OTHER_MARGIN_LLR,
)

DETECTOR_KINDS = ("hog", "cnn")  # face detectors whose landmarks AV sync is calibrated on


def edgepin_command_line(argv: list[str]) -> str:
    """The command as a user would retype it, for a report's provenance line; "" when not run
    through the CLI (a library call has no command line to give). `python -m edge_runtime.cli`,
    what a checkout's scripts run, is the same program as the `edgepin` console script."""
    if not argv:
        return ""
    prog = Path(argv[0])
    if prog.name != "edgepin" and prog.parts[-3:] != ("edge_runtime", "cli", "__main__.py"):
        return ""
    return "edgepin " + " ".join(shlex.quote(a) for a in argv[1:])


def _cache_dir(value: Path | None) -> Path:
    if value is not None:
        return value
    env = os.environ.get("EDGEPIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgepin"


def _calibrate(args: argparse.Namespace) -> int:
    from calibration.calibrate import calibrate
    from calibration.report import acceptance_statement, render_markdown
    from calibration.score_sets import SetConfig

    if args.n_face < 1 or args.n_voice < 1:
        raise ConfigError(f"--n-face and --n-voice must be >= 1, got {args.n_face}, {args.n_voice}")
    from edge_runtime.access.enroll import ENROL_VOICE_S

    enrol_s = ENROL_VOICE_S if args.voice_enrol_s is None else args.voice_enrol_s
    if enrol_s < 0:
        raise ConfigError(f"--voice-enrol-s must be >= 0 (0: --n-voice utterances), "
                          f"got {enrol_s}")
    if args.bootstrap < 1 or args.min_per_class < 2:
        raise ConfigError("--bootstrap must be >= 1 and --min-per-class >= 2")
    if args.max_probes < 0 or args.coverage_splits < 0 or args.coverage_bootstrap < 1:
        raise ConfigError("--max-probes and --coverage-splits must be >= 0 and "
                          "--coverage-bootstrap >= 1")
    if any(not 0 < f < 1 for f in args.far):
        raise ConfigError(f"--far values must be in (0, 1), got {args.far}")
    cfg = SetConfig(n_face=args.n_face, n_voice=args.n_voice, split=args.split,
                    voice_enrol_s=enrol_s or None,
                    min_speech_s=args.min_speech, grid_min_speech_s=args.grid_min_speech,
                    voice_probe_s=args.voice_probe if args.voice_probe > 0 else None,
                    max_probes=args.max_probes or None, seed=args.seed, workers=args.workers)
    report = calibrate(args.models, args.data, args.out, cache_dir=_cache_dir(args.cache),
                       precision=args.precision, sets_cfg=cfg, targets=args.far,
                       n_bootstrap=args.bootstrap, seed=args.seed,
                       min_per_class=args.min_per_class, det_png=args.plot,
                       threads=args.threads, coverage_splits=args.coverage_splits,
                       coverage_bootstrap=args.coverage_bootstrap, base=args.base,
                       face_tier=args.face_tier, face_tta=args.face_tta,
                       voice_tier=args.voice_tier)
    command = edgepin_command_line(sys.argv)
    out = Path(args.out)
    json_path = out.parent / f"{out.stem}.report.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(render_markdown(report, command))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    names = ", ".join(f"{n} {h[:12]}" for n, h in sorted(report["model_hashes"].items()))
    print(f"wrote {out} ({'PROVISIONAL' if report['provisional'] else 'not provisional'}) "
          f"for models: {names}")
    for p in report["thresholds"]:
        subset = "+".join(p["modalities"])
        if p["threshold"] is None:
            print(f"  {subset:<11} FAR {p['target_far']:<6g} {p['reason']}")
        else:
            print(f"  {subset:<11} FAR {p['target_far']:<6g} LLR > {p['threshold']:.3f}  "
                  f"achieved FAR {p['achieved_far']:.4f}  FRR {p['frr']:.4f}")
    for why in report["skipped"]:
        print(f"  skipped {why}")
    if report["base"]:
        b = report["base"]
        print(f"  from {b['base']}: re-fitted {', '.join(b['calibrations_refit']) or 'nothing'}; "
              f"kept {', '.join(b['calibrations_from_base']) or 'nothing'} (not measured here)")
        for m, why in sorted(b["calibrations_not_supported"].items()):
            print(f"  kept base {m}: {why}")
    print(f"  held-out FAR inside its prediction interval (shipped split): "
          f"{'yes' if report['held_out_check_passed'] else 'NO'}")
    if report["coverage"] and report["coverage"]["points"]:
        cov = report["coverage"]
        worst = min(cov["points"], key=lambda p: p["coverage"])
        print(f"  coverage over {cov['splits']} random splits: lowest {worst['coverage']:.0%} "
              f"({worst['modalities']} @ {worst['target_far']:g}); "
              f"{'consistent' if cov['consistent'] else 'NOT consistent'} with 95% intervals")
    print("  " + acceptance_statement(report["joint"]))
    if not report["cross_modal"]:
        print("  " + report["sets"].get("cross_modal_note", "cross-modal unavailable"))
    print(f"  report {json_path}" + (f", {args.report}" if args.report else "")
          + "; plots " + ", ".join(report["plots"].values()))
    return 0


def _calibrate_modes(args: argparse.Namespace) -> int:
    from calibration.avsync import measure, write_modes
    from edge_runtime.face_detectors import open_face_detector

    if args.grid is None and args.sync_from is None:
        raise ConfigError("calibrate-modes needs --grid DIR (to measure AV sync) or --sync-from "
                          "JSON (a previous measurement)")
    syncs = {}
    if args.sync_from is not None:  # a finished measurement (e.g. to add the voice veto only)
        syncs = {k: v for k, v in json.loads(args.sync_from.read_text()).items()
                 if k in args.detector}
        if not syncs:
            raise ConfigError(f"{args.sync_from} holds no AV-sync measurement for "
                              f"{', '.join(args.detector)}")
    for kind in [] if syncs else args.detector:  # landmarks follow the box: one threshold each
        models = args.models if args.models is not None else args.op[0].parent
        det = open_face_detector(kind, models=models).detector
        syncs[kind] = measure(args.grid, detector=det, kind=kind)
    if args.json_out is not None and args.sync_from is None:
        args.json_out.write_text(json.dumps(syncs, indent=2) + "\n")
    for path in args.op:
        veto = _voice_veto(args, path) if args.voice_data is not None else None
        op = write_modes(path, syncs, veto=veto, decisive_speech_s=args.decisive_speech,
                         voice_other_margin_llr=args.voice_other_margin,
                         voice_confirm_until_s=args.voice_confirm_until or None)
        print(f"wrote security modes into {path}: default {op.default_mode}")
        if veto is not None:
            print("  voice veto (LLR at seconds of speech): " + ", ".join(
                f"{v:.2f} at {x:g} s" for x, v in veto["table"]) +
                f" ({veto['quantile']:.0%} of {veto['speakers']} held-out speakers' own voices)")
    for kind, sync in syncs.items():
        print(f"  {kind}: AV-sync threshold {sync['shipped']['threshold']:.3f} (equal-error "
              f"point, {sync['shipped']['window_s']:g} s windows of {len(sync['clips'])} GRID "
              "clips)")
        for r in sync["rows"]:
            n = r["nested_loo"]
            print(f"    {r['window_s']:g} s windows: AUC shifted {r['auc_shifted']:.3f}, swapped "
                  f"{r['auc_swapped']:.3f}; photos rejected {r['photo_rejected']}/{r['n_photo']}; "
                  f"nested LOO BPCER {n['sync_rejected']['rate']:.1%}, APCER shifted "
                  f"{n['shifted_accepted']['rate']:.1%}, swapped "
                  f"{n['swapped_accepted']['rate']:.1%}")
    return 0


def _voice_veto(args: argparse.Namespace, op_path: Path) -> dict:
    """The calibrated voice veto of one operating-point file (its models' precision)."""
    import tempfile

    from calibration.exact_int8 import exact_int8_runners
    from calibration.voice_veto import genuine_voice_llrs, held_out_speakers, veto_table
    from edge_runtime.frontend.vad import SpeechGate
    from edge_runtime.models import ModelBundle, operating_points_tiers

    models = args.models if args.models is not None else op_path.parent
    # the models the file was made for, from its default name (edgepin calibrate --out); the
    # flags override it for other names; load_operating_points checks the hashes either way
    tiers = operating_points_tiers(op_path.name)
    for tier in ("face_tier", "voice_tier"):
        if getattr(args, tier, "auto") != "auto":
            tiers[tier] = getattr(args, tier)
    bundle = ModelBundle.load(models, operating_points=op_path, **tiers)
    try:
        with tempfile.TemporaryDirectory(prefix="edgepin-veto-") as tmp:
            if bundle.precision == "int8":  # as the file's thresholds were measured
                exact_int8_runners(bundle, Path(tmp), threads=1)
            assert bundle.operating_points is not None  # loaded from op_path
            speakers = held_out_speakers(args.voice_data, bundle)
            llrs = genuine_voice_llrs(bundle, bundle.operating_points, speakers,
                                      SpeechGate("auto"))
    finally:
        bundle.close()
    return {"table": veto_table(llrs, args.veto_quantile), "quantile": args.veto_quantile,
            "speakers": len(speakers), "trials": {f"{x:g}": int(v.size) for x, v in llrs.items()}}


def _register_modes(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate-modes", help="security modes + AV-sync threshold into operating-point files",
        description="Measure audio-visual sync liveness on the GRID talking-face clips with each "
                    "face detector, set one threshold per detector and write the security modes "
                    "(face+liveness, two-factor) into operating-point files (their checksums are "
                    "rewritten; identity thresholds unchanged).")
    p.add_argument("--op", type=Path, nargs="+", required=True, help="operating_points*.yaml")
    p.add_argument("--grid", type=Path, default=None, help="folder of GRID clips")
    p.add_argument("--sync-from", type=Path, default=None, metavar="JSON",
                   help="reuse the AV-sync measurement a previous run wrote with --json-out "
                        "instead of measuring again")
    p.add_argument("--detector", nargs="+", choices=DETECTOR_KINDS, default=list(DETECTOR_KINDS),
                   help="face detectors to calibrate AV sync for (default: all); the runtime "
                        "refuses a detector the file has no threshold for")
    p.add_argument("--models", type=Path, default=None,
                   help="models folder holding the CNN detector (default: the first --op's "
                        "folder)")
    p.add_argument("--voice-data", type=Path, default=None,
                   help="data folder with speechocean762/: calibrate the face+liveness voice "
                        "veto on its held-out speakers (default: keep the fixed veto)")
    p.add_argument("--face-tier", choices=("auto", "student", "large"), default="auto",
                   help="face model the --voice-data veto is measured with (auto: from each "
                        "--op file's name, e.g. operating_points.large.yaml: large)")
    p.add_argument("--voice-tier", choices=("auto", "student", "large"), default="auto",
                   help="voice model the --voice-data veto is measured with (auto: from each "
                        "--op file's name, e.g. operating_points.voice_large.yaml: large)")
    p.add_argument("--veto-quantile", type=float, default=0.02,
                   help="share of genuine voices the veto may reject at each speech length")
    p.add_argument("--decisive-speech", type=float, default=DECISIVE_SPEECH_S, metavar="S",
                   help="seconds of speech on which face+liveness decides a live attempt (and "
                        f"the least a live source collects; default {DECISIVE_SPEECH_S:g})")
    p.add_argument("--voice-other-margin", type=float, default=VOICE_OTHER_MARGIN_LLR,
                   metavar="LLR",
                   help="face+liveness denies a voice that favours another enrolled person over "
                        "the candidate by this calibrated LLR (default "
                        f"{VOICE_OTHER_MARGIN_LLR:g})")
    p.add_argument("--voice-confirm-until", type=float, default=VOICE_CONFIRM_UNTIL_S,
                   metavar="S",
                   help="face+liveness at a live door: a voice that does not confirm the "
                        "candidate on its own keeps the door listening until this much speech "
                        f"(default {VOICE_CONFIRM_UNTIL_S:g}; 0: grant at the decisive speech)")
    p.add_argument("--json-out", type=Path, default=None, help="also write the measurement")
    p.set_defaults(handler=_calibrate_modes)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `edgepin calibrate` and `edgepin calibrate-modes` to the parser."""
    _register_modes(subparsers)
    p = subparsers.add_parser(
        "calibrate", help="operating points (calibration, fusion, thresholds) from real data",
        description="Score held-out LFW faces, speechocean762 voices and GRID clips through the "
                    "models, calibrate to LLRs, fuse, set thresholds at target FARs on a held-out "
                    "half and check them on the other; write the versioned operating-point file "
                    "the runtime loads (keyed by the models' sha256), a JSON report and plots.")
    p.add_argument("--models", type=Path, required=True, help="models folder (manifest.json)")
    p.add_argument("--data", type=Path, required=True,
                   help="folder holding lfw/ (or faces/: person/photo), speechocean762/ (or "
                        "voices/: speaker/utterance) and grid/ (or clips/: one talking-face clip "
                        "per person); any may be missing (skipped, said so)")
    p.add_argument("--out", type=Path, required=True, help="operating_points.yaml to write")
    p.add_argument("--plot", type=Path, default=None,
                   help="DET png (default OUT-stem.det.png; other plots go next to OUT)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--report", type=Path, default=None, help="also write a markdown report")
    p.add_argument("--cache", type=Path, default=None,
                   help="face-crop cache (default $EDGEPIN_CACHE or ~/.cache/edgepin)")
    p.add_argument("--face-tier", choices=("student", "large"), default="student",
                   help="face model to calibrate: the student, or face_large (dlib's face "
                        "ResNet) with its own heads; the runtime loads "
                        "operating_points.large[.int8].yaml for --face-tier large")
    p.add_argument("--voice-tier", choices=("student", "large"), default="student",
                   help="voice model to calibrate: the student, or voice_large (Resemblyzer's "
                        "GE2E encoder, `edgepin port-resemblyzer`; no cross-modal heads yet); "
                        "the runtime loads operating_points[.large].voice_large[.int8].yaml "
                        "for --voice-tier large")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="int8 calibrates face_int8/voice_int8 (a separate file: name it so)")
    p.add_argument("--face-tta", choices=FACE_TTA, default="none",
                   help="flip: each face embedding is averaged with its mirror image's (about "
                        "-0.3 pt EER for the student, 2x its time; benchmarks/face_tta.md); "
                        "recorded in the file, the runtime then embeds faces the same way")
    p.add_argument("--split", choices=("heldout", "test", "all"), default="heldout",
                   help="heldout: identities each student never trained on (its test and val "
                        "people); test: its test people only; all: every identity")
    p.add_argument("--max-probes", type=int, default=10,
                   help="probes per person, so a person with 50 photos weighs as 10 (0: all)")
    p.add_argument("--coverage-splits", type=int, default=40,
                   help="random re-splits of the held-out people to test the intervals' "
                        "coverage (0: skip)")
    p.add_argument("--coverage-bootstrap", type=int, default=200,
                   help="bootstrap resamples per point in each coverage split")
    p.add_argument("--n-face", type=int, default=2, help="face photos per template")
    p.add_argument("--n-voice", type=int, default=3,
                   help="utterances per voice template; with --voice-enrol-s, the fewest")
    p.add_argument("--voice-enrol-s", type=float, default=None, metavar="SECONDS",
                   help="voice templates take this many voiced seconds, as the door enrols "
                        "(never a speaker's last recording; default: the door's, 15 s); "
                        "0: exactly --n-voice utterances")
    p.add_argument("--far", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4],
                   help="target false accept rates")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--min-per-class", type=int, default=10,
                   help="fewest genuine and impostor trials a calibration may use")
    p.add_argument("--min-speech", type=float, default=1.0,
                   help="voiced seconds an utterance needs")
    p.add_argument("--grid-min-speech", type=float, default=0.5,
                   help="voiced seconds a GRID clip half needs")
    p.add_argument("--voice-probe", type=float, default=2.0, metavar="SECONDS",
                   help="voice probes keep their first SECONDS of voiced speech, what the live "
                        "loop decides on (0: whole utterances); templates use whole utterances")
    p.add_argument("--base", type=Path, default=None,
                   help="start from this operating-point file (e.g. models/operating_points.yaml,"
                        " made for the same models): re-fit only what --data supports, keep the "
                        "rest (a site's own, small set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    p.add_argument("--workers", type=int, default=2, help="face-alignment processes")
    p.set_defaults(handler=_calibrate)
