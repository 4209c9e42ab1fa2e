"""Regenerate the gRPC stubs under sidecar/_proto from protos/.

protoc writes imports from the proto path (`from containerd.types import ...`); the stubs live under the
package prefix `sidecar._proto` so that no top-level `containerd` or `types` package shadows anything, and
the imports are rewritten to match. `generate(dest)` is also used by the test that checks the committed
stubs are fresh.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PREFIX = "sidecar._proto"
TOP_LEVEL = ("containerd", "cri")
_IMPORT = re.compile(rf"^(from|import) ({'|'.join(TOP_LEVEL)})\b", re.MULTILINE)


def generate(dest: Path) -> None:
    """Write fresh stubs for every proto into `dest` (an empty or absent directory)."""
    import grpc_tools

    bin_dir = Path(sys.executable).parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc",
                f"-I{PROTOS}", f"-I{well_known}",
                f"--python_out={out}", f"--grpc_python_out={out}",
                f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}", f"--mypy_out={out}",
                f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}", f"--mypy_grpc_out={out}",
                *sources,
            ],
            check=True,
            cwd=PROTOS,
            capture_output=True,  # the mypy plugin chats on stdout; errors still raise with stderr kept
        )
        dest.mkdir(parents=True, exist_ok=True)
        banner = '"""Generated gRPC stubs (scripts/gen_protos.py). Do not edit."""\n'
        (dest / "__init__.py").write_text(banner)
        for path in sorted(out.rglob("*")):
            if path.is_dir():
                continue
            target = dest / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_IMPORT.sub(rf"\1 {PREFIX}.\2", path.read_text()))
        for directory in sorted(p for p in dest.rglob("*") if p.is_dir()):
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text("")


def main() -> None:
    dest = ROOT / "sidecar" / "_proto"
    shutil.rmtree(dest, ignore_errors=True)
    generate(dest)
    print(f"wrote stubs to {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
