"""requirements.lock (scripts/lock.sh) still pins what pyproject.toml asks for, with hashes.

The Dockerfile and CI install the runtime dependencies from the lock only; a dependency added
to pyproject.toml without regenerating the lock would be missing from the image.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def pins() -> dict[str, list[tuple[Version, str, list[str]]]]:
    """name -> [(version, marker, hashes)] (a universal lock may pin one name twice)."""
    text = LOCK.read_text()
    found: dict[str, list[tuple[Version, str, list[str]]]] = {}
    for entry in re.split(r"\n(?=\S)", text):
        first = entry.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*(.*))?", first)
        assert match, f"not an exact pin: {first!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
        found.setdefault(canonicalize_name(match.group(1)), []).append(
            (Version(match.group(2)), match.group(3) or "", hashes))
    return found


def test_every_pin_has_hashes() -> None:
    locked = pins()
    assert len(locked) > 20
    for name, entries in locked.items():
        for version, _, hashes in entries:
            assert hashes, f"{name}=={version} has no hash: pip --require-hashes refuses it"


def test_lock_satisfies_pyproject_and_the_build_backend() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    locked = pins()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run scripts/lock.sh"
        for version, _, _ in locked[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, pyproject.toml wants "
                f"{requirement.specifier}: run scripts/lock.sh")
    for name in ("uvloop", "httptools"):  # uvicorn[standard]: the server's fast path
        assert name in locked


def test_the_image_and_ci_install_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "--no-deps --no-build-isolation --no-index ." in dockerfile
    assert "--require-hashes -r requirements.lock" in (ROOT / "scripts/test.sh").read_text()
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text().splitlines()
