"""A longer soak of a 5-node lab than the test suite's (tests/reliability/test_soak.py runs one minute):
64 clients mixing local hits, relays, misses and Range requests, membership churn every few seconds, one
provider's lokal restarted in the middle. Every body is checked against its digest.

    sudo .venv/bin/python bench/soak.py                          # 5 minutes of load
    sudo .venv/bin/python bench/soak.py --seconds 1800 --clients 64 --churn-every 3

Output: JSON to stdout and to bench/results/soak.json (`--out`): requests by kind and outcome (ok,
corrupt, cut, errors, statuses, p50/p99), per lokal the file descriptors before the load and after a
settle period and the RSS samples (MB, one per second), the churn events, crashed processes, and verdicts
(zero corrupt bodies, no crash, no fd leak, RSS stopped growing).

Rules (lab.md): the load runs only inside the lab's namespaces; it is bounded by --seconds and by a
request count; every process is stopped by PID at the end, on error too (LabCluster's context).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lokal_lab.cluster import LabCluster  # noqa: E402
from lokal_lab.network import lab_unavailable_reason  # noqa: E402

from tests.reliability.labtools import write_token_file  # noqa: E402
from tests.reliability.soak import (  # noqa: E402
    SOAK_LOKAL_ARGS,
    SOAK_TOPOLOGY,
    SoakPlan,
    SoakReport,
    rss_growth_stopped,
    run_soak,
)

POOL_PER_PEER = 8  # PeerClient keeps at most this many idle connections per peer


def verdicts(report: SoakReport) -> dict[str, Any]:
    peers = len(report.nodes) - 1
    leaks = {}
    for node, f in report.nodes.items():
        if f.restarted or not f.fds_after:
            continue
        before, after = f.fds_before, f.fds_after
        if (
            after["file"] > before["file"]
            or after["pipe"] > before["pipe"]
            or after["socket"] > before["socket"] + POOL_PER_PEER * peers
        ):
            leaks[node] = {"before": before, "after": after}
    growing = [n for n, f in report.nodes.items() if not f.restarted and not rss_growth_stopped(f.rss_mb)]
    return {
        "zero_corrupt": report.totals().get("corrupt", 0) == 0,
        "no_crash": report.crashed == [],
        "no_fd_leak": leaks == {},
        "fd_leaks": leaks,
        "rss_stopped_growing": growing == [],
        "rss_growing": growing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of load (10-3600)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients, even (2-256)")
    parser.add_argument("--churn-every", type=float, default=3.0, help="seconds between churn steps (1-60)")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="a bound in count too")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    if not 10 <= args.seconds <= 3600:
        parser.error(f"--seconds {args.seconds}: must be 10-3600")
    if not 2 <= args.clients <= 256 or args.clients % 2:
        parser.error(f"--clients {args.clients}: must be an even number, 2-256")
    if not 1 <= args.churn_every <= 60:
        parser.error(f"--churn-every {args.churn_every}: must be 1-60 seconds")
    if args.max_requests < 1:
        parser.error(f"--max-requests {args.max_requests}: must be > 0")
    reason = lab_unavailable_reason()
    if reason:
        print(f"bench/soak.py cannot run here: {reason}", file=sys.stderr)
        return 2
    plan = SoakPlan(
        seconds=args.seconds,
        clients=args.clients,
        churn_every_s=args.churn_every,
        max_requests=args.max_requests,
    )
    with tempfile.TemporaryDirectory(prefix="lokal-bench-soak-") as tmp:
        work = Path(tmp)
        lokal_args = (*SOAK_LOKAL_ARGS, "--peer-token-file", str(write_token_file(work)))
        with LabCluster(SOAK_TOPOLOGY, lokal_args=lokal_args) as cluster:
            report = run_soak(cluster, work, plan, log=lambda m: print(m, file=sys.stderr))
    print(report.summary(), file=sys.stderr)
    document = {**report.to_json(), "verdicts": verdicts(report)}
    text = json.dumps(document, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    ok = all(
        document["verdicts"][k] for k in ("zero_corrupt", "no_crash", "no_fd_leak", "rss_stopped_growing")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
