"""
A bounded flood of ECHONET Lite frames at a node, from several source
addresses at once, each bound to port 3610 as a controller is: valid Gets,
Gets of history the node must relay to the meter (E2), and frames it must
drop (a wrong EHD, too short, an unknown object, a property count that lies,
a property running past the frame's end, a SetC of E5).

    python flood.py NODE --source A --source B ... [--rate N] [--seconds S] [--grace S]

Each source sends one frame of the cycle L{KINDS} in turn, C{--rate} frames
a second, for C{--seconds}; then it listens C{--grace} seconds more for
late answers.  Every frame that has a TID carries its kind in the TID's high
byte, so each answer is counted against what it answers.

Prints one JSON object: per source, the frames sent and the answers
received by kind and ESV, and the times (seconds from the start) at which a
relayed E2 came back with data.
"""

import argparse
import json
import selectors
import socket
import sys
import time

PORT = 3610
CONTROLLER = bytes.fromhex("05ff01")
METER = bytes.fromhex("028801")


def _frame(kind: int, n: int, deoj: bytes, esv: int, props: bytes, opc: int) -> bytes:
    return b"\x10\x81" + bytes([kind, n & 0xFF]) + CONTROLLER + deoj + bytes([esv, opc]) + props


#: name -> how to make the frame (kind, sequence number) -> bytes.
KINDS = [
    ("get_e7", lambda k, n: _frame(k, n, METER, 0x62, b"\xe7\x00", 1)),
    ("get_e2", lambda k, n: _frame(k, n, METER, 0x62, b"\xe2\x00", 1)),
    ("bad_ehd", lambda k, n: b"\x10\x82" + _frame(k, n, METER, 0x62, b"\xe7\x00", 1)[2:]),
    ("short", lambda k, n: _frame(k, n, METER, 0x62, b"", 1)[:4 + n % 7]),
    ("unknown_object", lambda k, n: _frame(k, n, bytes.fromhex("013001"), 0x62,
                                           b"\x80\x00", 1)),
    ("opc_lies", lambda k, n: _frame(k, n, METER, 0x62, b"\xe7\x00", 3)),
    ("pdc_overrun", lambda k, n: _frame(k, n, METER, 0x62, b"\xe7\x20\x00", 1)),
    ("setc_e5", lambda k, n: _frame(k, n, METER, 0x61, b"\xe5\x01\x01", 1)),
    ("get_e2", lambda k, n: _frame(k, n, METER, 0x62, b"\xe2\x00", 1)),
    ("bad_ehd", lambda k, n: b"\x00\x00" + _frame(k, n, METER, 0x62, b"\xe7\x00", 1)[2:]),
]


class Source:
    """One source address: its socket, what it sent and what came back."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, PORT))
        self.sock.setblocking(False)
        self.sent: dict = {}
        self.answers: dict = {}
        self.relayed: list = []
        self.strays = 0
        self.next = 0

    def send(self, node: str) -> None:
        index = self.next % len(KINDS)
        name, make = KINDS[index]
        self.sock.sendto(make(index, self.next // len(KINDS)), (node, PORT))
        self.sent[name] = self.sent.get(name, 0) + 1
        self.next += 1

    def receive(self, started: float) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            if len(data) < 12 or data[2] >= len(KINDS):
                self.strays += 1
                continue
            name = KINDS[data[2]][0]
            esv = f"{data[10]:02X}"
            counts = self.answers.setdefault(name, {})
            counts[esv] = counts.get(esv, 0) + 1
            # A relayed E2: a Get_Res whose E2 holds data.
            if name == "get_e2" and data[10] == 0x72 and len(data) > 14 and data[13] > 0:
                self.relayed.append(round(time.monotonic() - started, 3))


def flood(node: str, sources: list, rate: float, seconds: float, grace: float) -> dict:
    selector = selectors.DefaultSelector()
    for source in sources:
        selector.register(source.sock, selectors.EVENT_READ, source)
    started = time.monotonic()
    end = started + seconds
    due = started
    while True:
        now = time.monotonic()
        if now >= end + grace:
            break
        if now >= due and now < end:
            for source in sources:
                source.send(node)
            due += 1.0 / rate
        wait = (due if due < end else end + grace) - time.monotonic()
        for key, _ in selector.select(max(0.0, wait)):
            key.data.receive(started)
    return {source.sock.getsockname()[0]: {
        "sent": source.sent, "answers": source.answers, "relayed": source.relayed,
        "strays": source.strays} for source in sources}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node")
    parser.add_argument("--source", action="append", required=True)
    parser.add_argument("--rate", type=float, default=10.0, help="frames a second per source")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=3.0,
                        help="seconds to wait for late answers after the last frame")
    args = parser.parse_args()
    try:
        sources = [Source(address) for address in args.source]
    except OSError as e:
        print(f"flood: cannot bind: {e}", file=sys.stderr)
        return 1
    report = flood(args.node, sources, args.rate, args.seconds, args.grace)
    json.dump({"seconds": args.seconds, "rate": args.rate, "sources": report}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
