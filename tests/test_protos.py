"""The committed stubs are exactly what scripts/gen_protos.py generates from protos/."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    generate = runpy.run_path(str(ROOT / "scripts" / "gen_protos.py"))["generate"]
    generate(tmp_path)
    committed = ROOT / "sidecar" / "_proto"
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    kept = {
        p.relative_to(committed): p.read_bytes()
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(kept) == sorted(fresh), "stub files differ: run scripts/gen_protos.py"
    stale = [str(path) for path in fresh if fresh[path] != kept[path]]
    assert not stale, f"stale stubs (run scripts/gen_protos.py): {stale}"


def test_wire_names_are_containerds() -> None:
    from sidecar._proto.containerd.services.content.v1 import content_pb2
    from sidecar._proto.containerd.services.events.v1 import events_pb2

    assert content_pb2.DESCRIPTOR.services_by_name["Content"].full_name == (
        "containerd.services.content.v1.Content"
    )
    assert events_pb2.Envelope.DESCRIPTOR.fields_by_name["event"].number == 4
    assert content_pb2.ReadContentRequest.DESCRIPTOR.fields_by_name["size"].number == 3
