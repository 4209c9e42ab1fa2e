"""The containerd-side misconfiguration checks, on their own (the lab test shows them end to end)."""

from __future__ import annotations

from pathlib import Path

from sidecar.containerd.diagnostics import content_root_warning, namespace_warning


def test_a_namespace_without_images_is_named_only_when_another_one_has_images() -> None:
    warning = namespace_warning("default", 0, {"default": 0, "k8s.io": 12, "moby": 0})
    assert warning is not None and "--containerd-namespace 'default'" in warning and "'k8s.io' (12" in warning
    assert "moby" not in warning
    assert namespace_warning("k8s.io", 0, {"k8s.io": 0}) is None  # an empty node is not misconfigured
    assert namespace_warning("k8s.io", 3, {"k8s.io": 3, "other": 5}) is None


def test_a_missing_or_unknown_content_root_is_warned_and_a_fresh_one_is_not(tmp_path: Path) -> None:
    unknown = content_root_warning(None)
    assert unknown is not None and "--content-root" in unknown and "gRPC" in unknown
    missing = content_root_warning(str(tmp_path / "absent"))
    assert missing is not None and "does not exist" in missing
    assert content_root_warning(str(tmp_path)) is None  # exists, no blobs yet (a fresh containerd)
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    assert content_root_warning(str(tmp_path)) is None


def test_a_missing_content_root_is_no_problem_while_containerd_holds_nothing(tmp_path: Path) -> None:
    # containerd 2.x creates its content root with the first blob: a fresh 2.x node has none.
    assert content_root_warning(str(tmp_path / "absent"), holds_content=False) is None
    assert content_root_warning(str(tmp_path / "absent"), holds_content=True) is not None
