"""The soak's load: N client threads inside one lab namespace, each asking its lokal for a mix of blobs it
holds (local hits), blobs other nodes hold (relays), digests nobody holds (misses) and byte ranges, and
checking every body against its digest or the expected bytes.

Standard library only: it runs as `ip netns exec NS python loadgen.py SPEC.json` and prints one JSON
summary line. Bounded by the spec's `max_requests` and `max_seconds`, whichever comes first.

Spec: {"host", "port", "clients", "max_requests", "max_seconds", "timeout",
       "work": [{"kind": "local"|"relay"|"miss"|"range", "path", "digest", "size",
                 "range": [first, last] (range only), "expect_sha256": of those bytes (range only)}]}

Per kind, the summary counts: "ok" (a whole, correct body; a 404 for a miss), "statuses" (every status
seen), "corrupt" (a body presented as whole, status 200/206 with all its Content-Length bytes, whose bytes
are wrong: must be 0), "cut" (the connection ended before Content-Length: never presented as whole),
"errors" (no answer at all), and latency percentiles of the whole request.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import threading
import time
from typing import Any


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, dict[str, Any]] = {}
        self.total = 0
        self.samples: list[dict[str, Any]] = []

    def add(self, kind: str, outcome: str, status: int | None, seconds: float, detail: str = "") -> None:
        with self.lock:
            entry = self.kinds.setdefault(
                kind, {"requests": 0, "ok": 0, "corrupt": 0, "cut": 0, "errors": 0, "statuses": {}, "ms": []}
            )
            entry["requests"] += 1
            entry[outcome] = entry.get(outcome, 0) + 1
            key = str(status)
            entry["statuses"][key] = entry["statuses"].get(key, 0) + 1
            if len(entry["ms"]) < 200_000:
                entry["ms"].append(seconds * 1000)
            if outcome in ("corrupt", "errors") and len(self.samples) < 20:
                self.samples.append({"kind": kind, "outcome": outcome, "status": status, "detail": detail})


def one_request(conn: http.client.HTTPConnection, item: dict[str, Any]) -> tuple[str, int | None, str]:
    headers = {}
    if item["kind"] == "range":
        first, last = item["range"]
        headers["Range"] = f"bytes={first}-{last}"
    conn.request("GET", item["path"], headers=headers)
    response = conn.getresponse()
    status = response.status
    length_text = response.getheader("Content-Length")
    length = int(length_text) if length_text and length_text.isdigit() else None
    hasher = hashlib.sha256()
    received = 0
    try:
        while True:
            chunk = response.read(65536)
            if not chunk:
                break
            hasher.update(chunk)
            received += len(chunk)
    except http.client.IncompleteRead as exc:
        received += len(exc.partial)
        return "cut", status, f"{received} of {length}"
    if length is not None and received < length:
        return "cut", status, f"{received} of {length}"
    digest = "sha256:" + hasher.hexdigest()
    kind = item["kind"]
    if kind == "miss":
        return ("ok" if status == 404 else "unexpected"), status, ""
    if status == 200 and kind in ("local", "relay"):
        whole = received == item["size"] and digest == item["digest"]
        return ("ok" if whole else "corrupt"), status, f"{received} bytes, {digest[:19]}"
    if status == 206 and kind == "range":
        right = digest == item["expect_sha256"]
        return ("ok" if right else "corrupt"), status, f"{received} bytes"
    if status == 200 and kind == "range":  # a server may ignore Range: then it is the whole blob
        whole = received == item["size"] and digest == item["digest"]
        return ("ok" if whole else "corrupt"), status, ""
    return "refused", status, ""  # 404 (fell back: containerd would go upstream), 503, ...


def client(spec: dict[str, Any], index: int, tally: Tally, deadline: float, budget: list[int]) -> None:
    work = spec["work"]
    conn: http.client.HTTPConnection | None = None
    turn = index
    while time.monotonic() < deadline:
        with tally.lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        item = work[turn % len(work)]
        turn += 1
        started = time.monotonic()
        if conn is None:
            conn = http.client.HTTPConnection(spec["host"], spec["port"], timeout=spec.get("timeout", 30))
        try:
            outcome, status, detail = one_request(conn, item)
        except (OSError, http.client.HTTPException) as exc:
            outcome, status, detail = "errors", None, f"{type(exc).__name__}: {exc}"
        if outcome != "ok" or status is None or status >= 400:
            conn.close()  # a fresh connection after anything unusual
            conn = None
        tally.add(item["kind"], outcome, status, time.monotonic() - started, detail)
    if conn is not None:
        conn.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main(path: str) -> int:
    with open(path) as f:
        spec = json.load(f)
    tally = Tally()
    started = time.monotonic()
    deadline = started + float(spec["max_seconds"])
    budget = [int(spec["max_requests"])]
    threads = [
        threading.Thread(target=client, args=(spec, i, tally, deadline, budget), daemon=True)
        for i in range(int(spec["clients"]))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=float(spec["max_seconds"]) + 2 * float(spec.get("timeout", 30)) + 10)
    seconds = time.monotonic() - started
    kinds = {}
    for kind, entry in tally.kinds.items():
        ms = entry.pop("ms")
        kinds[kind] = {**entry, "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99)}
    summary = {
        "clients": spec["clients"],
        "seconds": round(seconds, 2),
        "requests": sum(k["requests"] for k in kinds.values()),
        "kinds": kinds,
        "samples": tally.samples,
        "stuck_threads": sum(t.is_alive() for t in threads),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
