"""Text for people from the debug endpoint's JSON: `format_status` and `format_where`. Pure."""

from __future__ import annotations

from itertools import groupby
from typing import Any


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_status(doc: dict[str, Any]) -> str:
    node = doc["node"]
    lines = [
        f"node      {node['name']}  region {node['region'] or '-'}  zone {node['zone'] or '-'}  "
        f"address {node.get('address') or '-'}",
        f"policy    {doc['policy']}  (discovery {doc.get('discovery') or '-'})",
    ]
    index = doc["index"]
    lines.append(
        f"index     {index['entries_held']} entries held ({index['keys_held']} keys), "
        f"{index['keys_advertised']} keys advertised" + ("; FULL" if index["bound_hit"] else "")
    )
    containerd = doc["containerd"]
    lines.append(f"containerd {containerd['state']}"
                 + (f", {containerd['absent_blobs']} absent blobs" if containerd["absent_blobs"] else ""))
    if containerd.get("config_check"):
        lines.append(f"           config {containerd['config_check']}")
    lines.extend(_crossing_lines(doc.get("crossing")))
    peers = doc["peers"]
    lines.append("")
    lines.append(f"peers ({len(peers)})" if peers else "peers     none")
    for (region, zone), group in groupby(peers, key=lambda p: (p["region"], p["zone"])):
        lines.append(f"  {region or 'unknown'} / {zone or 'unknown'}")
        for peer in group:
            speed = f"{peer['throughput_mbps']} MB/s" if peer["throughput_mbps"] is not None else "unmeasured"
            allowed = "" if peer["eligible"] else f"  (not used: {peer['policy']})"
            lines.append(f"    {peer['name']:<24} {peer['health']:<16} {peer['tier']:<13} {speed}{allowed}")
    requests = doc["requests"]
    ratio = requests["hit_ratio"]
    lines.append("")
    by_result = ", ".join(f"{k} {v}" for k, v in requests["by_result"].items()) or "none"
    lines.append(f"requests  {requests['requests']} from containerd ({by_result}); hit ratio "
                 + ("-" if ratio is None else f"{ratio:.1%}"))
    tiers = ", ".join(f"{k} {_bytes(v)}" for k, v in requests["bytes_by_tier"].items()) or "none"
    lines.append(f"bytes     to containerd by source tier: {tiers}")
    to_peers = ", ".join(f"{k} {_bytes(v)}" for k, v in requests["bytes_to_peers_by_tier"].items()) or "none"
    lines.append(f"          to peers ({requests['peer_requests']} requests): {to_peers}")
    if doc["warnings"]:
        lines.append("")
        lines.append("warnings")
        lines.extend(f"  ! {w}" for w in doc["warnings"])
    recent = requests["recent"]
    lines.append("")
    lines.append(f"last {len(recent)} requests" if recent else "no requests yet")
    for r in recent:
        where = r.get("provider") or ""
        detail = r.get("reason") if r["result"] in ("miss", "error") else f"{_bytes(r['bytes'])} {r['ms']} ms"
        lines.append(f"  {r['requester']:<10} {r['kind']:<8} {r['digest'][:19]:<19} {r['result']:<5} "
                     f"{r.get('tier') or '-':<12} {where:<16} {detail}")
    return "\n".join(lines)


def _speed(est: dict[str, Any]) -> str:
    rate = "-" if est["rate_mbps"] is None else f"{est['rate_mbps']} MB/s"
    first = "-" if est["first_byte_ms"] is None else f"{est['first_byte_ms']} ms"
    stale = "" if est["fresh"] else ", stale"
    return f"{rate}, first byte {first} ({est['rate_samples']} samples, {est['age_s']}s ago{stale})"


def _crossing_lines(crossing: dict[str, Any] | None) -> list[str]:
    if not crossing:
        return []
    lines = ["", f"speeds    learned (auto bias {crossing['bias']:g})"]
    for registry, est in crossing["upstream"].items():
        lines.append(f"  upstream {registry:<28} {_speed(est)}")
    for region, est in crossing["regions"].items():
        lines.append(f"  region   {region:<28} {_speed(est)}")
    if not crossing["upstream"] and not crossing["regions"]:
        lines.append("  nothing measured yet")
    if crossing["decisions"]:
        made = ", ".join(f"{d['choice']} ({d['basis']}) {d['count']}" for d in crossing["decisions"])
        lines.append(f"  auto decisions: {made}")
    for name, cap in crossing["caps"].items():
        lines.append(f"  cap {name}: {_bytes(cap['rate_bytes_per_s'])}/s, throttled {cap['throttled_s']}s, "
                     f"refused {cap['refused']}, {cap['active']} active")
    return lines


def format_where(doc: dict[str, Any]) -> str:
    image = doc["digest"]
    if doc["repository"] is not None:
        image = f"{doc['registry']}/{doc['repository']}@{image}"
    lines = [image, f"seen from {doc['node']} ({doc['mode']}, cross-region {doc['cross_region']})", ""]
    for blob in doc["blobs"]:
        size = "" if blob["size"] is None else f"  {_bytes(blob['size'])}"
        lines.append(f"{blob['kind']:<8} {blob['short']}{size}  -> {blob['verdict']}: {blob['why']}")
        auto = blob.get("auto")
        if auto:
            over, up = auto["auto_over_region_s"], auto["auto_upstream_s"]
            lines.append(f"    auto: {auto['auto_choice']} (over {auto['auto_region']} "
                         f"{'-' if over is None else f'{over:.2f}s'}, upstream "
                         f"{'-' if up is None else f'{up:.2f}s'})")
        for position, source in enumerate(blob["order"], 1):
            lines.append(f"    {position}. {source['node']:<24} {source['tier']:<13} {source['reason']}")
        for source in blob["refused"]:
            lines.append(f"    x  {source['node']:<24} {source['tier']:<13} {source['reason']}")
        for name in blob["strangers"]:
            lines.append(f"    ?  {name:<24} not in the membership")
        for name in blob.get("in_progress", ()):
            lines.append(f"    ~  {name:<24} downloading it now (in-progress provider)")
        if blob.get("note"):
            lines.append(f"    note: {blob['note']}")
    if doc.get("truncated"):
        lines.append("(truncated)")
    return "\n".join(lines)
