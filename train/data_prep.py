"""Bring extra training data out of a repository snapshot, outside the project, verified.

`python -m train.data_prep utkface --git-dir DIR --dest /work/data/utkface` extracts only
`data/UTKFace/unlabeled/` of a `mattans/AgeProgression` snapshot (`git archive | tar -x`) and
checks the result against the snapshot itself: the file count and every file's git blob hash.
A fresh machine has no snapshot: fetch the repository again first (docs/face_data.md).
Nothing here downloads; nothing extracted is ever committed (UTKFace: non-commercial terms).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import DatasetError, EdgepinError


@dataclass(frozen=True)
class SnapshotFolder:
    """A folder of a public repository that we train on."""

    repo: str
    folder: str
    n_files: int | None  # expected count, None when not pinned


UTKFACE = SnapshotFolder("mattans/AgeProgression", "data/UTKFace/unlabeled", 23707)


def _git(git_dir: Path, *args: str) -> bytes:
    try:
        res = subprocess.run(["git", "-C", str(git_dir), *args], capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise DatasetError("git is not installed; it is needed to read the snapshot") from exc
    if res.returncode != 0:
        raise DatasetError(f"git -C {git_dir} {' '.join(args)}: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout


def listed_blobs(git_dir: Path, folder: str, rev: str = "HEAD") -> dict[str, str]:
    """path -> blob sha1 for every file under `folder` in the snapshot."""
    out = _git(git_dir, "ls-tree", "-r", "-z", rev, "--", folder)
    blobs: dict[str, str] = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        mode, kind, sha = meta.split()
        if kind == b"blob":
            blobs[path.decode()] = sha.decode()
    return blobs


def git_blob_sha(path: Path) -> str:
    """The sha1 git gives a file's content: proves the extracted bytes are the snapshot's."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_folder(dest: Path, blobs: dict[str, str], expected: int | None) -> dict:
    """Compare extracted files with the snapshot listing; raise naming the first difference."""
    if expected is not None and len(blobs) != expected:
        raise DatasetError(f"snapshot lists {len(blobs)} files, expected {expected}: another "
                           "version of the repository?")
    missing, wrong = [], []
    for rel, sha in blobs.items():
        p = dest / rel
        if not p.is_file():
            missing.append(rel)
        elif git_blob_sha(p) != sha:
            wrong.append(rel)
    if missing or wrong:
        first = (missing or wrong)[0]
        raise DatasetError(f"{dest}: {len(missing)} file(s) missing and {len(wrong)} differ from the "
                           f"snapshot, e.g. {first}")
    return {"n_files": len(blobs), "verified": "git blob sha1 of every file"}


def extract_folder(git_dir: str | Path, spec: SnapshotFolder, dest: str | Path, rev: str = "HEAD") -> dict:
    """`git archive REV FOLDER | tar -x -C DEST`, then verify; returns a small report."""
    git_dir, dest = Path(git_dir), Path(dest)
    if not git_dir.exists():
        raise DatasetError(f"git dir {git_dir} does not exist: fetch {spec.repo} first "
                           "(docs/face_data.md)")
    blobs = listed_blobs(git_dir, spec.folder, rev)
    if not blobs:
        raise DatasetError(f"{git_dir} ({rev}) holds no file under {spec.folder}: is it a snapshot "
                           f"of {spec.repo}?")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        report = verify_folder(dest, blobs, spec.n_files)  # already there and intact: nothing to do
        return {**report, "dest": str(dest / spec.folder), "extracted": False}
    except DatasetError:
        pass
    archive = subprocess.Popen(["git", "-C", str(git_dir), "archive", rev, "--", spec.folder],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True,
                         check=False)
    archive.stdout.close()  # type: ignore[union-attr]
    err = archive.stderr.read().decode(errors="replace") if archive.stderr else ""
    if archive.wait() != 0:
        raise DatasetError(f"git archive {spec.folder} from {git_dir} failed: {err.strip()}")
    if tar.returncode != 0:
        raise DatasetError(f"tar -x into {dest} failed: {tar.stderr.decode(errors='replace').strip()}")
    report = verify_folder(dest, blobs, spec.n_files)
    return {**report, "dest": str(dest / spec.folder), "extracted": True}


def main(argv: list[str] | None = None) -> int:
    """Command line: one sub-command per dataset."""
    parser = argparse.ArgumentParser(prog="python -m train.data_prep", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    p = sub.add_parser("utkface", help=f"extract {UTKFACE.folder} of a {UTKFACE.repo} snapshot")
    p.add_argument("--git-dir", required=True, help="the snapshot's git directory")
    p.add_argument("--dest", required=True, help="folder outside the project, e.g. /work/data/utkface")
    p.add_argument("--rev", default="HEAD")
    args = parser.parse_args(argv)
    try:
        report = extract_folder(args.git_dir, UTKFACE, args.dest, args.rev)
    except EdgepinError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
