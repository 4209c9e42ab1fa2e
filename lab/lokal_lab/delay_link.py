"""A delayed point-to-point link between two namespaces: a TUN device in each, packets carried in user space.

    ip netns exec NS_A python -m lokal_lab.delay_link --dev-a ir-1 --netns-b NS_B --dev-b ir-0 \
        --delay-ms 25 --ready-file F

This kernel has no netem, and a TCP proxy cannot sit transparently between two lokal peers (the peer's
source address is its identity). This link can: it moves whole IP packets, so addresses are untouched.

Rules:
- The process starts inside namespace A (so the lab's teardown finds it there), creates TUN `--dev-a`, then
  enters namespace B to create TUN `--dev-b`. The devices vanish when the process exits: nothing to clean.
- Each packet is released `delay` after it was read (pure `DelayLine`, one per direction), as on a long
  wire; packets keep flowing meanwhile. A full direction (`--buffer-bytes`) drops packets, like a router
  queue: it never blocks the other direction.
- Addresses, routes and tbf on the devices are the lab's job, after the ready file appears.
- Packets are forwarded one by one in Python: a few thousand per second. Give the lab a large MTU (9000) so
  that this is a few hundred Mbit/s.
- SIGTERM or SIGINT: exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import selectors
import signal
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lokal_lab.delay_proxy import DelayLine

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000
_MAX_PACKET = 65536


def open_tun(name: str) -> int:
    """Create (and open) TUN device `name` in the current network namespace; non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into named network namespace `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def carry(fd_a: int, fd_b: int, delay: float, buffer_bytes: int, stop: list[bool]) -> None:
    """Move packets a->b and b->a, each `delay` late, until `stop[0]`."""
    lines = {fd_a: (DelayLine(delay, buffer_bytes), fd_b), fd_b: (DelayLine(delay, buffer_bytes), fd_a)}
    sel = selectors.DefaultSelector()
    sel.register(fd_a, selectors.EVENT_READ)
    sel.register(fd_b, selectors.EVENT_READ)
    while not stop[0]:
        dues = [d for line, _ in lines.values() if (d := line.next_due()) is not None]
        timeout = max(0.0, min(dues) - time.monotonic()) if dues else 0.5
        for key, _ in sel.select(timeout=min(timeout, 0.5)):
            line, _out = lines[key.fd]
            for _ in range(64):  # drain a burst, bounded so the other side gets its turn
                try:
                    packet = os.read(key.fd, _MAX_PACKET)
                except BlockingIOError:
                    break
                if line.has_room():
                    line.push(time.monotonic(), packet)
        now = time.monotonic()
        for line, out in lines.values():
            for due in line.pop_due(now):
                # A failed write is a lost packet, as on a real link: TCP recovers.
                if due:
                    with contextlib.suppress(OSError):
                        os.write(out, due)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lokal_lab.delay_link", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dev-a", required=True, help="TUN name in this (the current) namespace")
    parser.add_argument("--netns-b", required=True, help="named network namespace of the other end")
    parser.add_argument("--dev-b", required=True, help="TUN name in --netns-b")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each direction")
    parser.add_argument("--buffer-bytes", type=int, default=4 * 1024 * 1024, help="per direction")
    parser.add_argument("--ready-file", type=Path, help="written once both devices exist")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or args.buffer_bytes <= 0:
        print("delay_link: --delay-ms must be >= 0 and --buffer-bytes > 0", file=sys.stderr)
        return 2
    stop = [False]

    def request_stop(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        fd_a = open_tun(args.dev_a)
        enter_netns(args.netns_b)
        fd_b = open_tun(args.dev_b)
    except OSError as exc:
        print(f"delay_link: cannot create the TUN devices: {exc}", file=sys.stderr)
        return 1
    if args.ready_file:
        partial = args.ready_file.with_name(args.ready_file.name + ".partial")
        partial.write_text("ready\n")
        partial.replace(args.ready_file)
    carry(fd_a, fd_b, args.delay_ms / 1000.0, args.buffer_bytes, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
