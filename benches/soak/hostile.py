#!/usr/bin/env python3
"""Hostile clients for the soak (benches/soak/soak.py): stallers and garbage.

Started by soak.py as a child process; every connection it makes is
recorded, and the records are written to a JSON file at the end, for soak.py
to check against its bounds.

  hostile.py stallers --port P --count N --out FILE
      N slots, half of them TCP connections that send nothing, half that send
      an SSLRequest and then nothing. Each slot waits until the broker closes
      its connection, records when, and connects again, so that N stallers
      are present for as long as the run lasts.

  hostile.py garbage --port P --concurrency W --rate R --out FILE [--once]
      W workers opening connections (at most R a second in all) that each
      send one kind of garbage (see KINDS): random bytes, truncated or
      oversized ClientHellos, huge length fields, direct-TLS junk, plaintext
      after an SSLRequest, a ClientHello dribbled byte by byte, ... then
      either wait for the broker to close the connection ("stall", "half":
      after shutting down their own side), or close it themselves ("close",
      "abort": with a reset). --once runs every kind once and exits.

Line protocol with the caller: stdout `ready` once the N stallers are
connected (stallers) or the storm has begun (garbage); stdin `stop`, or
stdin closed, stops new connections; the open ones are waited for (each up
to --wait seconds for the broker to close it), FILE is written, stdout
`done N` (N records), and the process exits.

Each record: kind, mode, source address, `closed_after` (seconds from the
connect() call to the broker's close, or null), `how` it ended
(`eof` or `reset`: closed by the broker; `self`: closed by us; `open`: still
open after --wait; `connect_failed`), and the first bytes received, in hex.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import ssl
import struct
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

# Postgres start-up packets.
SSL_REQUEST = struct.pack("!II", 8, (1234 << 16) | 5679)
GSSENC_REQUEST = struct.pack("!II", 8, (1234 << 16) | 5680)
CANCEL_CODE = (1234 << 16) | 5678

# Linux: choose the source port at connect(), by the whole 4-tuple, rather
# than at bind(), so that thousands of connections from one bound address do
# not run out of ports.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# How many bytes of what the broker sent are kept in a record.
REPLY_PREFIX = 16


# ---------------------------------------------------------------------------
# One connection
# ---------------------------------------------------------------------------


@dataclass
class Record:
    """What happened to one connection."""

    kind: str
    mode: str  # stall, half, close, abort
    source: str
    started: float  # seconds since the run began
    closed_after: Optional[float] = None  # connect() to the broker's close
    how: str = "open"  # eof, reset, self, open, connect_failed
    reply: str = ""  # first bytes received, hex
    error: str = ""


# An action is one of: ("send", bytes), ("sleep", seconds),
# ("reply", n): wait until n bytes have arrived from the broker (or it closed),
# ("dribble", (bytes, interval)): send one byte per interval.
Action = tuple[str, object]


@dataclass
class Plan:
    """What one connection sends, and how it ends."""

    kind: str
    actions: list[Action]
    mode: str  # stall: wait for the broker's close; half: shut down our
    # side, then wait; close: close; abort: close with a reset


class Connection:
    """A client socket with a reader that notes when the broker closes it."""

    def __init__(self, sock: socket.socket, connecting: float) -> None:
        self.sock = sock
        self.connecting = connecting
        self.received = bytearray()
        self.arrived = asyncio.Event()
        self.closed_at: Optional[float] = None
        self.how = "open"
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    self._closed("eof")
                    return
                if len(self.received) < 1 << 20:
                    self.received += data
                self.arrived.set()
        except OSError:
            # ECONNRESET mostly; any error ends the connection all the same.
            self._closed("reset")

    def _closed(self, how: str) -> None:
        self.closed_at = time.monotonic()
        self.how = how
        self.arrived.set()

    async def wait_bytes(self, n: int, timeout: float) -> None:
        """Until `n` bytes have arrived, the broker closed, or `timeout`."""
        deadline = time.monotonic() + timeout
        while len(self.received) < n and self.closed_at is None:
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def wait_closed(self, timeout: float) -> None:
        """Until the broker closes the connection, or `timeout`."""
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        except asyncio.TimeoutError:
            pass

    def discard(self, abort: bool = False) -> None:
        self.reader.cancel()
        if abort:
            try:
                # Linger on, timeout 0: close() sends a reset.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()


async def connect(port: int, source: str) -> tuple[socket.socket, float]:
    """A non-blocking TCP connection to 127.0.0.1:port from `source`; returns
    the socket and the moment connect() was called.

    That moment, not the one the event loop learns that the connection is
    established, is what close times are measured from: the broker accepts
    (and starts its deadline) after it, never before, so a close measured
    earlier than the deadline is the broker's doing, whatever the event
    loop's delays when thousands of connections open at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source != "127.0.0.1":
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        connecting = time.monotonic()
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 15)
    except BaseException:
        sock.close()
        raise
    return sock, connecting


async def run_plan(
    plan: Plan,
    port: int,
    source: str,
    wait: float,
    epoch: float,
    on_connect: Optional[Callable[[], None]] = None,
) -> Record:
    """Connects, carries out `plan` and returns its record. `on_connect` is
    called once the connection is established or has failed."""
    record = Record(plan.kind, plan.mode, source, round(time.monotonic() - epoch, 3))
    try:
        sock, connecting = await connect(port, source)
    except (OSError, asyncio.TimeoutError) as error:
        record.how = "connect_failed"
        record.error = str(error) or type(error).__name__
        return record
    finally:
        if on_connect:
            on_connect()
    conn = Connection(sock, connecting)
    loop = asyncio.get_running_loop()
    try:
        for action, arg in plan.actions:
            if conn.closed_at is not None:
                break
            if action == "send":
                await loop.sock_sendall(sock, arg)
            elif action == "sleep":
                await asyncio.sleep(arg)
            elif action == "reply":
                await conn.wait_bytes(arg, timeout=wait)
            elif action == "dribble":
                data, interval = arg
                for i in range(len(data)):
                    if conn.closed_at is not None:
                        break
                    await loop.sock_sendall(sock, data[i:i + 1])
                    await asyncio.sleep(interval)
    except (ConnectionResetError, BrokenPipeError):
        pass  # the broker closed the connection: the reader notes when
    except OSError as error:
        record.error = error.strerror or str(error)

    if plan.mode in ("close", "abort"):
        record.how = "self"
        record.reply = bytes(conn.received[:REPLY_PREFIX]).hex()
        conn.discard(abort=plan.mode == "abort")
        return record
    if plan.mode == "half" and conn.closed_at is None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    await conn.wait_closed(wait)
    record.reply = bytes(conn.received[:REPLY_PREFIX]).hex()
    if conn.closed_at is not None:
        record.how = conn.how
        record.closed_after = round(conn.closed_at - conn.connecting, 4)
    conn.discard()
    return record


# ---------------------------------------------------------------------------
# Garbage
# ---------------------------------------------------------------------------


def client_hello(server_name: str) -> bytes:
    """A real ClientHello (OpenSSL's, as psql would send) naming
    `server_name`, taken from a handshake that goes no further."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    if not hello or hello[0] != 0x16:
        raise RuntimeError("could not make a ClientHello")
    return hello


def startup_message(user: str = "postgres") -> bytes:
    """A plaintext protocol 3.0 StartupMessage."""
    body = struct.pack("!I", 3 << 16) + b"user\0" + user.encode() + b"\0database\0postgres\0\0"
    return struct.pack("!I", len(body) + 4) + body


class Kinds:
    """The garbage a worker may send; each method name after `kind_` is the
    kind's name, and returns the plan for one connection."""

    def __init__(self, rng: random.Random, server_name: str, deadline: float) -> None:
        self.rng = rng
        self.hello = client_hello(server_name)
        self.unknown_hello = client_hello("nobody.soak.invalid")
        self.deadline = deadline

    @classmethod
    def names(cls) -> list[str]:
        return sorted(name[len("kind_"):].replace("_", "-") for name in dir(cls) if name.startswith("kind_"))

    def plan(self, name: str) -> Plan:
        actions, mode = getattr(self, "kind_" + name.replace("-", "_"))()
        return Plan(name, actions, mode)

    def junk(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def truncated_hello(self) -> bytes:
        return self.hello[: self.rng.randint(1, len(self.hello) - 1)]

    # Plaintext garbage.
    def kind_random(self):
        return [("send", self.junk(1, 2048))], "stall"

    def kind_random_close(self):
        return [("send", self.junk(1, 2048))], "close"

    def kind_random_half(self):
        return [("send", self.junk(1, 2048))], "half"

    def kind_startup_length_huge(self):
        # Length 0x7fffffff, then the start of a StartupMessage.
        return [("send", b"\x7f\xff\xff\xff" + startup_message()[4:])], "stall"

    def kind_startup_length_short(self):
        return [("send", struct.pack("!II", 4, 3 << 16))], "stall"

    def kind_startup_partial(self):
        # A plausible length, then only part of the packet.
        message = startup_message()
        return [("send", message[: self.rng.randint(1, len(message) - 1)])], "stall"

    def kind_plaintext_startup(self):
        return [("send", startup_message())], "stall"

    def kind_gssenc_twice(self):
        return [("send", GSSENC_REQUEST), ("reply", 1), ("send", GSSENC_REQUEST)], "stall"

    def kind_gssenc_stall(self):
        return [("send", GSSENC_REQUEST), ("reply", 1)], "stall"

    def kind_cancel_random(self):
        key = struct.pack("!II", self.rng.getrandbits(32), self.rng.getrandbits(32))
        return [("send", struct.pack("!II", 16, CANCEL_CODE) + key)], "stall"

    # After an SSLRequest.
    def kind_ssl_then_plaintext(self):
        # Bytes behind the SSLRequest before the `S` (CVE-2021-23214).
        return [("send", SSL_REQUEST + startup_message())], "stall"

    def kind_ssl_wait_plaintext(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", startup_message())], "stall"

    def kind_ssl_random(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.junk(1, 2048))], "stall"

    def kind_ssl_flood(self):
        # A megabyte where a ClientHello (at most 16 KiB) should be.
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.rng.randbytes(1 << 20))], "stall"

    def kind_hello_truncated(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.truncated_hello())], "stall"

    def kind_hello_truncated_close(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.truncated_hello())], "close"

    def kind_hello_truncated_half(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.truncated_hello())], "half"

    def kind_hello_truncated_abort(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.truncated_hello())], "abort"

    def kind_record_length_max(self):
        # A handshake record announcing 0xffff bytes (over the 16 KiB + 256
        # a TLS record may hold), then some of them.
        return [("send", SSL_REQUEST), ("reply", 1),
                ("send", b"\x16\x03\x01\xff\xff" + self.junk(1, 4096))], "stall"

    def kind_handshake_length_max(self):
        # A well-formed record holding a ClientHello header announcing
        # 0xffffff bytes.
        body = b"\x01\xff\xff\xff" + self.junk(16, 512)
        record = b"\x16\x03\x01" + struct.pack("!H", len(body)) + body
        return [("send", SSL_REQUEST), ("reply", 1), ("send", record)], "stall"

    def kind_alert_instead_of_hello(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", b"\x15\x03\x03\x00\x02\x02\x28")], "stall"

    def kind_unknown_server_name(self):
        return [("send", SSL_REQUEST), ("reply", 1), ("send", self.unknown_hello)], "stall"

    def kind_hello_dribble(self):
        # One byte of a real hello every 100 ms: only the deadline ends it.
        interval = 0.1
        count = min(int(self.deadline / interval) + 20, len(self.hello) - 1)
        return [("send", SSL_REQUEST), ("reply", 1), ("dribble", (self.hello[:count], interval))], "stall"

    # Direct TLS (no SSLRequest).
    def kind_direct_junk(self):
        return [("send", b"\x16\x03\x01" + self.junk(0, 1024))], "stall"

    def kind_direct_truncated(self):
        return [("send", self.truncated_hello())], "stall"

    def kind_direct_no_alpn(self):
        # A complete hello, but without ALPN `postgresql`: refused.
        return [("send", self.hello)], "stall"

    # Nothing at all.
    def kind_silent_close(self):
        return [], "close"

    def kind_silent_abort(self):
        return [], "abort"


class Pacer:
    """Spaces connection starts at most `rate` per second, over all workers."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        self.next = max(self.next + self.interval, now)
        delay = self.next - now
        if delay > 0:
            await asyncio.sleep(delay)


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def sources(spread: bool) -> list[str]:
    """Source addresses: 127.0.0.2 to 127.0.0.254 when spreading (so that the
    clients look like many hosts, none of them the benchmark client's), else
    127.0.0.1."""
    return [f"127.0.0.{i}" for i in range(2, 255)] if spread else ["127.0.0.1"]


class Run:
    """Shared state of one run: records, the stop flag, the epoch."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.records: list[Record] = []
        self.stopping = asyncio.Event()
        self.epoch = time.monotonic()
        self.sources = sources(args.spread_sources)

    async def watch_stdin(self) -> None:
        """Sets the stop flag on `stop` or when stdin closes."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                self.stopping.set()
                return

    def source(self, i: int) -> str:
        return self.sources[i % len(self.sources)]

    def finish(self) -> None:
        with open(self.args.out, "w") as f:
            json.dump([asdict(r) for r in self.records], f)
        print(f"done {len(self.records)}", flush=True)


async def stallers(args: argparse.Namespace) -> None:
    run = Run(args)
    first_connected = asyncio.Semaphore(0)

    async def slot(i: int) -> None:
        plan = Plan("tcp-silent", [], "stall") if i < args.count // 2 else \
            Plan("ssl-request-stall", [("send", SSL_REQUEST)], "stall")
        # Ready once every slot's first connection is established (or has
        # failed, which is recorded).
        on_connect: Optional[Callable[[], None]] = first_connected.release
        while on_connect or not run.stopping.is_set():
            record = await run_plan(plan, args.port, run.source(i), args.wait, run.epoch, on_connect)
            run.records.append(record)
            on_connect = None

    stdin = asyncio.ensure_future(run.watch_stdin())
    slots = []
    for i in range(args.count):
        slots.append(asyncio.ensure_future(slot(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.01)  # stay under the broker's accept backlog
    for _ in range(args.count):
        await first_connected.acquire()
    # Give the last connects a moment to be accepted.
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.gather(*slots)
    stdin.cancel()
    run.finish()


async def garbage(args: argparse.Namespace) -> None:
    run = Run(args)
    rng = random.Random(args.seed)
    kinds = Kinds(rng, args.server_name, args.deadline)
    names = Kinds.names()

    if args.once:
        run.records = list(await asyncio.gather(*(
            run_plan(kinds.plan(name), args.port, run.source(i), args.wait, run.epoch)
            for i, name in enumerate(names))))
        run.finish()
        return

    pacer = Pacer(args.rate)

    async def worker(i: int) -> None:
        n = 0
        while not run.stopping.is_set():
            await pacer.wait()
            if run.stopping.is_set():
                return
            plan = kinds.plan(rng.choice(names))
            run.records.append(await run_plan(plan, args.port, run.source(i * 7919 + n), args.wait, run.epoch))
            n += 1

    stdin = asyncio.ensure_future(run.watch_stdin())
    workers = [asyncio.ensure_future(worker(i)) for i in range(args.concurrency)]
    print("ready", flush=True)
    await asyncio.gather(*workers)
    stdin.cancel()
    run.finish()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("stallers", "garbage"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True, help="the broker's port on 127.0.0.1")
        s.add_argument("--out", required=True, help="where to write the records (JSON)")
        s.add_argument("--wait", type=float, default=20.0,
                       help="how long a connection waits for the broker to close it (default 20 s)")
        s.add_argument("--spread-sources", action="store_true",
                       help="connect from 127.0.0.2 to 127.0.0.254 instead of 127.0.0.1")
    s = sub.choices["stallers"]
    s.add_argument("--count", type=int, required=True, help="stallers present at once")
    g = sub.choices["garbage"]
    g.add_argument("--concurrency", type=int, default=100, help="workers, each with one connection at a time")
    g.add_argument("--rate", type=float, default=200.0, help="new connections per second at most, in all (0: no cap)")
    g.add_argument("--server-name", default="bench.db.example.com", help="name in the (truncated) ClientHellos")
    g.add_argument("--deadline", type=float, default=10.0, help="the broker's handshake timeout, seconds")
    g.add_argument("--seed", type=int, default=1, help="seed of the random garbage")
    g.add_argument("--once", action="store_true", help="one connection of every kind, then exit")
    g.add_argument("--list", action="store_true", help="print the kinds and exit")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.command == "garbage" and args.list:
        print("\n".join(Kinds.names()))
        return 0
    asyncio.run(stallers(args) if args.command == "stallers" else garbage(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
