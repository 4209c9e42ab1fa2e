"""What ships: the wheel (`pip wheel .`) holds the `sidecar` package and its metadata, and no lab, test
or benchmark code; the image copies only what the wheel is built from (issue 16, part 4)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_sidecar_only_and_no_lab_code(tmp_path: Path) -> None:
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True)
    for name in tracked.stdout.splitlines():  # a clean copy: no build/ or egg-info left in the checkout
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("lokal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"sidecar", next(t for t in tops if t.endswith(".dist-info"))}
    assert not [n for n in names if "lokal_lab" in n or "fake_apiserver" in n or n.startswith("sidecar/lab")]
    assert "sidecar/serve.py" in names and "sidecar/cli/demo.py" in names  # the demo's shim ships


def test_the_image_copies_only_the_shipped_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set()
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied |= {re.sub(r"^\./", "", w) for w in words[1:-1]}
    assert copied == {"pyproject.toml", "README.md", "sidecar"}
