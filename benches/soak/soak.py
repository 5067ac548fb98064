#!/usr/bin/env python3
"""pgsni soak: proves, with real parts, that the broker does not fall over.

Normally started by benches/soak/run.sh, which installs what is missing,
builds the release binaries and raises the open-files limit first. Everything
runs on loopback: a TLS PostgreSQL 15 (from benches/pgbench/harness.py, whose
pieces this reuses), the release `pgsni`, real `pgbench`, the light rustls
tenant (examples/tls_tenant) and idle client (examples/idle_clients), and the
hostile clients of benches/soak/hostile.py.

Proofs (`--only`, default all four):

  idle      N idle TLS sessions (default 10 000) held through the broker; then
            pgbench passes through it with 0 failed transactions, and every
            idle session is still open. Reports resident memory and
            descriptors per session. When one process's open-files limit
            cannot hold N sessions (two descriptors each), several pgsni
            processes share the port (SO_REUSEPORT), and the output says so.
  stallers  N clients (default 1 000) that connect and send nothing, or an
            SSLRequest and then nothing (half each), kept present during
            pgbench runs interleaved with runs without them: the median
            throughput drops by less than 10 %, and every staller is closed
            at the handshake deadline (connect to close within
            [deadline - 0.05 s, deadline + 1.5 s]), timed from connect().
  reload    the routes file rewritten (temporary file, then rename) every
            100 ms during pgbench with persistent connections and pgbench -C
            at once: 0 failed transactions, no reload error, the last version
            in force; reports reloads counted against rewrites.
  garbage   hostile connections (hostile.py's kinds: random bytes, truncated
            and oversized ClientHellos, huge length fields, direct-TLS junk,
            plaintext after an SSLRequest, dribbled hellos, resets, ...)
            during pgbench, persistent and -C: the same process alive, 0
            failed transactions, every connection that waits closed within
            the deadline + 1.5 s, and open connections, runtime tasks and
            descriptors back to their baseline.

Every check prints PASS or FAIL with what was measured and its bound; the
exit status is 1 if any check failed (or the set-up broke), else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benches" / "pgbench"))
# No __pycache__ in the source tree for the imported harness.
sys.dont_write_bytecode = True

import harness  # noqa: E402  (benches/pgbench/harness.py)
from harness import (  # noqa: E402
    FD_RESERVE,
    TENANT,
    Bench,
    Endpoint,
    IdleClients,
    Service,
    SetupError,
    free_port,
    free_ports,
    log,
    rss_kib,
    stop_all,
)

HOSTILE = Path(__file__).resolve().parent / "hostile.py"

# The idle tenant's name: routed to examples/tls_tenant, while the benchmark
# tenant's name goes to PostgreSQL.
IDLE_TENANT = "idle.db.example.com"
# Toggled in and out of the routes file by the reload storm.
DUMMY_TENANT = "dummy.db.example.com"

PROOFS = ("idle", "stallers", "reload", "garbage")

# Bounds. A staller's close is timed from its connect() call, which comes
# before the broker accepts it and starts the deadline: it must be closed no
# earlier than the deadline minus EARLY_SLACK (timer and clock granularity),
# and no later than the deadline plus LATE_SLACK (scheduling on a loaded
# machine, the accept queue).
MAX_TPS_DROP = 0.10
EARLY_SLACK = 0.05
LATE_SLACK = 1.5

# pgbench clients: persistent runs and runs with a new connection per
# transaction (-C).
PGBENCH_PERSISTENT = ["-c", "8", "-j", "2"]
PGBENCH_STORM = ["-c", "4", "-j", "2"]

FULL = dict(idle=10_000, stallers=1_000, rounds=5, duration=15, reload_seconds=60, garbage_seconds=60,
            handshake_timeout=10.0, garbage_concurrency=400, garbage_rate=300.0, scale=10)
QUICK = dict(idle=500, stallers=100, rounds=5, duration=5, reload_seconds=10, garbage_seconds=10,
             handshake_timeout=3.0, garbage_concurrency=50, garbage_rate=100.0, scale=1)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benches/soak/run.sh",
        description="Soak pgsni with real PostgreSQL, pgbench and hostile clients; every check prints PASS or FAIL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""full sizes (the default): {', '.join(f'{k}={v}' for k, v in FULL.items())}
--quick:                  {', '.join(f'{k}={v}' for k, v in QUICK.items())}
(an option given explicitly wins over either preset)

run.sh itself also takes --no-build (use the binaries already built).

examples:
  benches/soak/run.sh                          # the four proofs at full size
  benches/soak/run.sh --quick                  # about two minutes
  benches/soak/run.sh --only stallers --rounds 7
""",
    )
    p.add_argument("--only", default=",".join(PROOFS), help="proofs to run, e.g. idle,garbage (default all)")
    p.add_argument("--quick", action="store_true", help="small sizes that finish in under two minutes")
    p.add_argument("--idle", type=int, help="idle TLS sessions (full 10000)")
    p.add_argument("--stallers", type=int, help="stallers present at once (full 1000)")
    p.add_argument("--rounds", type=int, help="interleaved rounds with and without stallers (full 5)")
    p.add_argument("--duration", type=int, help="seconds per pgbench run, idle and stallers proofs (full 15)")
    p.add_argument("--reload-seconds", type=int, help="length of the reload storm (full 60)")
    p.add_argument("--reload-interval", type=float, default=0.1, help="seconds between rewrites (default 0.1)")
    p.add_argument("--garbage-seconds", type=int, help="length of the garbage storm (full 60)")
    p.add_argument("--garbage-concurrency", type=int, help="hostile connections at a time (full 400)")
    p.add_argument("--garbage-rate", type=float, help="new hostile connections per second at most (full 300)")
    p.add_argument("--handshake-timeout", type=float, help="the broker's --handshake-timeout, seconds (full 10)")
    p.add_argument("--scale", type=int, help="pgbench scale factor (full 10)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random garbage (default 1)")
    p.add_argument("--idle-concurrency", type=int, default=200, help="idle sessions opened at a time (default 200)")
    p.add_argument(
        "--target-dir",
        type=Path,
        default=Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")),
        help="cargo target directory holding release/pgsni and release/examples/ (default $CARGO_TARGET_DIR or target)",
    )
    p.add_argument("--out", type=Path, help="output directory (default TARGET_DIR/soak)")
    p.add_argument("--pg-bindir", type=Path, default=None, help="PostgreSQL server binaries (default: found like the tests)")
    p.add_argument("--keep-data", action="store_true", help="keep the PostgreSQL data directory afterwards")
    args = p.parse_args(argv)

    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.only = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in PROOFS]
    if unknown:
        p.error(f"unknown proof(s) {', '.join(unknown)}; choose from {', '.join(PROOFS)}")
    for name in ("idle", "stallers", "rounds", "duration", "reload_seconds", "garbage_seconds",
                 "garbage_concurrency", "scale", "idle_concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.handshake_timeout < 1 or args.reload_interval <= 0 or args.garbage_rate < 0:
        p.error("--handshake-timeout must be at least 1 s, --reload-interval positive, --garbage-rate not negative")
    args.target_dir = args.target_dir.resolve()
    args.out = (args.out or args.target_dir / "soak").resolve()
    return args


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


class Report:
    """Every check, printed as it is made: PASS or FAIL, what was measured,
    and the bound it was checked against."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, measured: str, bound: str) -> bool:
        line = f"{'PASS' if ok else 'FAIL'} {name}: {measured} (bound: {bound})"
        print(line, flush=True)
        self.lines.append(line)
        if not ok:
            self.failed.append(line)
        return ok

    def note(self, text: str) -> None:
        """A measurement or explanation that is not itself a check."""
        line = f"     {text}"
        print(line, flush=True)
        self.lines.append(line)


# ---------------------------------------------------------------------------
# The broker: one or more pgsni processes on one port
# ---------------------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of GET http://127.0.0.1:port/path."""
    try:
        with harness._no_proxy.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {series with labels: value}."""
    series: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            series[key] = float(value)
        except ValueError:
            pass
    return series


def outcomes(metrics: dict[str, float]) -> dict[str, float]:
    """pgsni_connections_total by outcome."""
    prefix = 'pgsni_connections_total{outcome="'
    return {k[len(prefix):-2]: v for k, v in metrics.items() if k.startswith(prefix)}


def open_fds(pid: int) -> int:
    """Descriptors open in `pid`, counted in /proc."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Broker:
    """`processes` pgsni processes listening on one port (SO_REUSEPORT),
    each with its own metrics endpoint, all reading one routes file."""

    def __init__(self, soak: "Soak", tag: str, routes: Path, processes: int = 1) -> None:
        self.port = free_port()
        self.metrics_ports = free_ports(processes)
        self.services: list[Service] = []
        binary = soak.args.target_dir / "release" / "pgsni"
        for i, metrics_port in enumerate(self.metrics_ports):
            argv = [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}", "--routes", str(routes),
                    "--metrics-listen", f"127.0.0.1:{metrics_port}",
                    "--handshake-timeout", f"{round(soak.args.handshake_timeout * 1000)}ms",
                    # Stopping the broker between proofs need not wait 30 s.
                    "--drain-timeout", "2s"]
            name = f"pgsni {tag}" + (f" #{i + 1}" if processes > 1 else "")
            service = Service(name, argv, soak.bench.logs / f"pgsni-{tag}-{i + 1}.log",
                              env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))
            self.services.append(service)
            self._wait_ready(service, metrics_port)
        self.pids = [s.pid for s in self.services]
        log(f"{tag}: pgsni on 127.0.0.1:{self.port} (pid {', '.join(map(str, self.pids))})")

    @staticmethod
    def _wait_ready(service: Service, metrics_port: int, timeout: float = 30.0) -> None:
        """Until /readyz answers 200 (routes loaded, listening)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.alive():
                raise SetupError(f"{service.name} exited during start-up:\n{service.tail()}")
            try:
                if http_get(metrics_port, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SetupError(f"{service.name} not ready after {timeout:.0f} s:\n{service.tail()}")

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("pgsni", self.port, self.services[0])

    def scrape(self) -> list[dict[str, float]]:
        """Every process's metrics."""
        return [parse_metrics(http_get(port, "/metrics")[1]) for port in self.metrics_ports]

    def total(self, series: str) -> float:
        """`series` summed over the processes."""
        return sum(m.get(series, 0.0) for m in self.scrape())

    def least(self, series: str, samples: int = 5) -> float:
        """The least of a few samples of `series` (a scrape's own task and
        socket may still be closing when the next one samples)."""
        values = []
        for _ in range(samples):
            values.append(self.total(series))
            time.sleep(0.05)
        return min(values)

    def fds(self) -> int:
        """Descriptors open in all the processes, counted in /proc."""
        return sum(open_fds(pid) for pid in self.pids)

    def alive(self) -> bool:
        """Every process still running, as the same process it started as."""
        return all(s.alive() and s.pid == pid for s, pid in zip(self.services, self.pids))

    def wait_for(self, what: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if what():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def routes_text(pg_port: int, *, idle_port: Optional[int] = None, dummy: bool = False,
                version: Optional[int] = None) -> str:
    """The routes file: the benchmark tenant to PostgreSQL, and optionally the
    idle tenant to tls_tenant and a dummy route."""
    lines = ["# pgsni soak" + (f", version {version}" if version is not None else ""),
             "[[route]]", f'server_name = "{TENANT}"', f'backends = ["127.0.0.1:{pg_port}"]']
    if idle_port is not None:
        lines += ["", "[[route]]", f'server_name = "{IDLE_TENANT}"', f'backends = ["127.0.0.1:{idle_port}"]']
    if dummy:
        lines += ["", "[[route]]", f'server_name = "{DUMMY_TENANT}"', 'backends = ["127.0.0.1:9"]']
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# pgbench and the hostile clients, in the background
# ---------------------------------------------------------------------------


@dataclass
class PgbenchResult:
    label: str
    tps: Optional[float]
    failed: int
    processed: int
    exit: int
    log: Path

    @property
    def ok(self) -> bool:
        return self.exit == 0 and self.tps is not None and self.failed == 0 and self.processed > 0

    def describe(self) -> str:
        tps = "no tps" if self.tps is None else f"{self.tps:.0f} tps"
        return f"{tps}, {self.processed} transactions, {self.failed} failed, exit {self.exit}"


class Pgbench:
    """One `pgbench -n -S` run through a port, in the background; its
    output goes to logs/runs/pgbench-LABEL.txt."""

    def __init__(self, soak: "Soak", label: str, port: int, extra: list[str], duration: int) -> None:
        bench = soak.bench
        self.label = label
        self.duration = duration
        self.log = bench.runs / f"pgbench-{label}.txt"
        argv = [str(bench.pg_bindir / "pgbench"), "-n", "-S", *extra, "-T", str(duration)]
        env = bench.libpq_env(port)
        shown = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("PG"))
        self.log.write_text(f"$ {shown} {' '.join(argv)}\n")
        # Appending: pgbench writes through the same file.
        self._file = open(self.log, "a")
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=harness._die_with_harness(signal.SIGKILL))

    def wait(self) -> PgbenchResult:
        try:
            rc = self.popen.wait(self.duration + 120)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait()
        self._file.write(f"\n[exit {rc}]\n")
        self._file.close()
        tps, failed, processed = harness.pgbench_summary(self.log.read_text(errors="replace"))
        return PgbenchResult(self.label, tps, failed, processed, rc, self.log)


def pgbench(soak: "Soak", label: str, port: int, extra: list[str], duration: int) -> PgbenchResult:
    result = Pgbench(soak, label, port, extra, duration).wait()
    log(f"pgbench {label}: {result.describe()}")
    return result


class Hostile:
    """benches/soak/hostile.py as a child, driven by its line protocol."""

    def __init__(self, soak: "Soak", label: str, command: list[str], ready_timeout: float = 120.0) -> None:
        self.records_file = soak.bench.runs / f"hostile-{label}.json"
        self.service = Service(
            f"hostile {label}",
            [sys.executable, str(HOSTILE), *command, "--out", str(self.records_file)],
            soak.bench.logs / f"hostile-{label}.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if "--once" not in command:
            self._expect("ready", ready_timeout)

    def _expect(self, word: str, timeout: float) -> str:
        stdout = self.service.popen.stdout
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().decode().strip() if ready else ""
        if not line.startswith(word):
            raise SetupError(f"{self.service.name}: expected {word!r}, got {line!r}\n{self.service.tail()}")
        return line

    def finish(self, timeout: float) -> list[dict]:
        """Stops new connections, waits for the open ones, returns every
        record."""
        if "--once" not in self.service.popen.args:
            try:
                self.service.popen.stdin.write(b"stop\n")
                self.service.popen.stdin.flush()
            except BrokenPipeError:
                pass
        self._expect("done", timeout)
        self.service.stop()
        return json.loads(self.records_file.read_text())


# ---------------------------------------------------------------------------
# The proofs
# ---------------------------------------------------------------------------


def fmt_s(values: list[float]) -> str:
    """min / median / max of durations in seconds."""
    if not values:
        return "none"
    return f"min {min(values):.3f} s, median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "n/a"


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.report = Report()
        bench_args = argparse.Namespace(
            out=args.out, pg_bindir=args.pg_bindir, idle=args.idle, scale=args.scale,
            target_dir=args.target_dir, idle_concurrency=args.idle_concurrency)
        self.bench = Bench(bench_args)
        self.fd_soft, self.fd_hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    @property
    def deadline(self) -> float:
        return self.args.handshake_timeout

    def setup(self) -> None:
        self.bench.prepare_dirs()
        self.bench.make_certs(extra_names=(IDLE_TENANT,))
        self.bench.start_postgres()

    def routes_file(self, tag: str, text: str) -> Path:
        """A routes file alone in its own directory (pgsni watches the
        directory)."""
        directory = self.bench.conf / tag
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "routes.toml"
        path.write_text(text)
        return path

    def pgbench_check(self, name: str, results: list[PgbenchResult]) -> None:
        bad = [r for r in results if not r.ok]
        measured = "; ".join(f"{r.label}: {r.describe()}" for r in results) if len(results) <= 2 else \
            f"{len(results)} runs, {sum(r.processed for r in results)} transactions, " \
            f"{sum(r.failed for r in results)} failed, exits {sorted({r.exit for r in results})}"
        for r in bad:
            self.report.note(f"see {r.log}")
        self.report.check(name, not bad, measured, "0 failed transactions, exit 0")

    # -- idle -----------------------------------------------------------------

    def proof_idle(self) -> None:
        """N idle TLS sessions through the broker, pgbench through it, and
        every session still open afterwards."""
        n = self.args.idle
        pgbench_clients = int(PGBENCH_PERSISTENT[1])
        per_process = (self.fd_soft - FD_RESERVE) // 2 - pgbench_clients
        if per_process < 1:
            raise SetupError(f"the open-files limit {self.fd_soft} is too low for the idle proof")
        # A share of SO_REUSEPORT's hash is never exactly 1/k: keep 10 % spare.
        processes = 1 if n <= per_process else math.ceil(n / (0.9 * per_process))
        # tls_tenant (one descriptor per session) must hold them all.
        if n > self.fd_soft - FD_RESERVE:
            raise SetupError(f"tls_tenant cannot hold {n} sessions under the open-files limit {self.fd_soft}")
        client_processes = math.ceil(n / (self.fd_soft - FD_RESERVE))

        self.report.note(
            f"open-files limit: soft {self.fd_soft}, hard {self.fd_hard}; a forwarding session costs pgsni "
            f"two descriptors, so one process holds at most {per_process} sessions here")
        if processes > 1:
            self.report.note(
                f"{n} sessions do not fit one process: {processes} pgsni processes share one port with "
                f"SO_REUSEPORT (as in an upgrade without downtime), the kernel spreading connections over them")

        tenant, tenant_port = self.bench.start_tls_tenant()
        routes = self.routes_file("idle", routes_text(self.bench.pg_port, idle_port=tenant_port))
        broker = Broker(self, "idle", routes, processes)
        try:
            self._idle(broker, n, client_processes)
        finally:
            broker.stop()
            tenant.stop()

    def _idle(self, broker: Broker, n: int, client_processes: int) -> None:
        endpoint = broker.endpoint
        # Warm-up (worker threads, allocator arenas), then the baseline.
        IdleClients(self.bench, endpoint, 20, 0, "idle warm-up", server_name=IDLE_TENANT).close()
        time.sleep(1.0)
        rss_before = [rss_kib(pid) for pid in broker.pids]
        fds_before = [open_fds(pid) for pid in broker.pids]

        log(f"idle: opening {n} TLS sessions to {IDLE_TENANT} through the broker")
        started = time.monotonic()
        shares = [n // client_processes + (1 if i < n % client_processes else 0) for i in range(client_processes)]
        clients = []
        try:
            for i, share in enumerate(shares):
                clients.append(IdleClients(self.bench, endpoint, share, 0, f"idle {i + 1}/{client_processes}",
                                           server_name=IDLE_TENANT))
            opened = sum(c.ok for c in clients)
            seconds = time.monotonic() - started
            time.sleep(2.0)  # let the last sessions settle
            rss_after = [rss_kib(pid) for pid in broker.pids]
            fds_after = [open_fds(pid) for pid in broker.pids]
            per_process = [m.get("pgsni_open_connections", 0.0) for m in broker.scrape()]
            max_fds = [m.get("process_max_fds", 0.0) for m in broker.scrape()]

            self.report.check("idle/opened", opened == n,
                              f"{opened} of {n} idle TLS sessions opened in {seconds:.1f} s "
                              f"({client_processes} idle_clients process{'es' if client_processes > 1 else ''})",
                              "all")
            grown = sum(rss_after) - sum(rss_before)
            self.report.note(
                f"broker: {len(broker.pids)} process{'es' if len(broker.pids) > 1 else ''}, sessions "
                f"{' + '.join(f'{v:.0f}' for v in per_process)}; RSS {sum(rss_before) / 1024:.1f} MiB before, "
                f"{sum(rss_after) / 1024:.1f} MiB with the sessions: {grown / max(opened, 1):.2f} KiB per session")
            self.report.note(
                f"descriptors: {' + '.join(map(str, fds_before))} before, {' + '.join(map(str, fds_after))} with "
                f"the sessions ({(sum(fds_after) - sum(fds_before)) / max(opened, 1):.2f} per session), limit "
                f"{' / '.join(f'{v:.0f}' for v in max_fds)} per process")

            result = pgbench(self, "idle", broker.port, PGBENCH_PERSISTENT, self.args.duration)
            self.pgbench_check("idle/pgbench", [result])

            alive = sum(c.alive() for c in clients)
            self.report.check("idle/held", alive == n,
                              f"{alive} of {n} idle sessions still open after pgbench (client side)", "all")
            broker.wait_for(lambda: broker.total("pgsni_open_connections") == n, 10)
            held = broker.total("pgsni_open_connections")
            self.report.check("idle/broker", held == n and broker.alive(),
                              f"pgsni_open_connections {held:.0f}, every process alive: {broker.alive()}",
                              f"{n}, alive")
        finally:
            for c in clients:
                c.close()

    # -- stallers ---------------------------------------------------------------

    def proof_stallers(self) -> None:
        """Stallers present during pgbench, rounds interleaved with runs
        without them: throughput, and every staller closed at the deadline."""
        a = self.args
        broker = Broker(self, "stallers", self.routes_file("stallers", routes_text(self.bench.pg_port)))
        try:
            pgbench(self, "stallers-warm-up", broker.port, PGBENCH_PERSISTENT, 2)
            before = outcomes(broker.scrape()[0])
            runs: dict[bool, list[PgbenchResult]] = {False: [], True: []}
            records: list[dict] = []
            for rnd in range(1, a.rounds + 1):
                # Alternate the order, so that drift hits both alike.
                for with_stallers in ((False, True) if rnd % 2 else (True, False)):
                    label = f"stallers-r{rnd}-{'with' if with_stallers else 'without'}"
                    hostile = None
                    if with_stallers:
                        hostile = Hostile(self, f"stallers-r{rnd}", [
                            "stallers", "--port", str(broker.port), "--count", str(a.stallers),
                            "--wait", str(self.deadline + 5)])
                    result = pgbench(self, label, broker.port, PGBENCH_PERSISTENT, a.duration)
                    runs[with_stallers].append(result)
                    if hostile:
                        records += hostile.finish(timeout=self.deadline + 60)
            after = outcomes(broker.scrape()[0])
            self._stallers_report(runs, records, before, after, broker)
        finally:
            broker.stop()

    def _stallers_report(self, runs: dict[bool, list[PgbenchResult]], records: list[dict],
                         before: dict[str, float], after: dict[str, float], broker: Broker) -> None:
        a = self.args
        self.pgbench_check("stallers/pgbench", runs[False] + runs[True])
        tps = {k: [r.tps for r in v if r.tps is not None] for k, v in runs.items()}
        if tps[False] and tps[True]:
            without, with_ = statistics.median(tps[False]), statistics.median(tps[True])
            drop = 1 - with_ / without
            self.report.check(
                "stallers/throughput", drop < MAX_TPS_DROP,
                f"median {with_:.0f} tps with {a.stallers} stallers, {without:.0f} without: "
                f"{100 * drop:+.1f} % drop (rounds with: {', '.join(f'{v:.0f}' for v in tps[True])}; "
                f"without: {', '.join(f'{v:.0f}' for v in tps[False])})",
                f"drop < {100 * MAX_TPS_DROP:.0f} %")
            paired = [1 - w.tps / wo.tps for w, wo in zip(runs[True], runs[False]) if w.tps and wo.tps]
            self.report.note(f"drop in each round, with against without: "
                             f"{', '.join(f'{100 * d:+.1f} %' for d in paired)}")
        else:
            self.report.check("stallers/throughput", False, "no throughput measured", f"drop < {100 * MAX_TPS_DROP:.0f} %")

        closed = [r for r in records if r["how"] in ("eof", "reset")]
        failed = [r for r in records if r["how"] == "connect_failed"]
        still_open = [r for r in records if r["how"] == "open"]
        self.report.check(
            "stallers/closed", bool(records) and len(closed) == len(records),
            f"{len(closed)} of {len(records)} stallers closed by the broker over {a.rounds} rounds "
            f"({sum(r['how'] == 'eof' for r in closed)} with a FIN, {sum(r['how'] == 'reset' for r in closed)} "
            f"with a reset; {len(failed)} connects failed, {len(still_open)} still open after the deadline + 5 s)",
            "all")
        low, high = self.deadline - EARLY_SLACK, self.deadline + LATE_SLACK
        times = [r["closed_after"] for r in closed]
        outside = [t for t in times if not low <= t <= high]
        self.report.check(
            "stallers/deadline", bool(times) and not outside,
            f"connect to close: {fmt_s(times)}; {len(outside)} of {len(times)} outside",
            f"[{low:g} s, {high:g} s] for --handshake-timeout {self.deadline:g}s")
        answers = {"tcp-silent": "", "ssl-request-stall": "53"}
        wrong = [r for r in closed if r["reply"] != answers[r["kind"]]]
        self.report.check(
            "stallers/answers", not wrong,
            f"{len(wrong)} of {len(closed)} stallers got something else than nothing (TCP) or `S` (SSLRequest)"
            + (f", e.g. {wrong[0]['kind']}: {wrong[0]['reply']}" if wrong else ""),
            "none")
        self.outcome_deltas(before, after)
        self.report.check("stallers/alive", broker.alive(), f"pid {broker.pids[0]} alive: {broker.alive()}", "alive")

    # -- reload -----------------------------------------------------------------

    def proof_reload(self) -> None:
        """The routes file rewritten every --reload-interval during pgbench,
        persistent and -C."""
        a = self.args
        routes = self.routes_file("reload", routes_text(self.bench.pg_port, version=0))
        broker = Broker(self, "reload", routes)
        try:
            before = broker.scrape()[0]
            runs = [Pgbench(self, "reload-persistent", broker.port, PGBENCH_STORM, a.reload_seconds),
                    Pgbench(self, "reload-C", broker.port, ["-C", *PGBENCH_STORM], a.reload_seconds)]
            rewrites = self._rewrite_routes(routes, a.reload_seconds, a.reload_interval)
            results = [r.wait() for r in runs]
            for r in results:
                log(f"pgbench {r.label}: {r.describe()}")
            # The last rewrite's table, once the debounce has passed.
            expected_routes = 2 if rewrites % 2 else 1
            broker.wait_for(lambda: broker.scrape()[0].get("pgsni_routes") == expected_routes, 5)
            after = broker.scrape()[0]
            self._reload_report(results, rewrites, expected_routes, before, after, broker)
        finally:
            broker.stop()

    def _rewrite_routes(self, routes: Path, seconds: float, interval: float) -> int:
        """Rewrites `routes` every `interval` for `seconds`, as a deploy tool
        would: a temporary file beside it, then a rename over it. Each
        version keeps the benchmark route, and the dummy route comes and
        goes. Returns the number of rewrites."""
        log(f"reload: rewriting {routes} every {interval * 1000:.0f} ms for {seconds} s")
        temporary = routes.with_name(".routes.toml.tmp")
        start = time.monotonic()
        version = 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                return version
            version += 1
            temporary.write_text(routes_text(self.bench.pg_port, dummy=version % 2 == 1, version=version))
            os.replace(temporary, routes)
            time.sleep(max(0.0, start + version * interval - time.monotonic()))

    def _reload_report(self, results: list[PgbenchResult], rewrites: int, expected_routes: int,
                       before: dict[str, float], after: dict[str, float], broker: Broker) -> None:
        self.pgbench_check("reload/pgbench", results[:1])
        self.pgbench_check("reload/pgbench-C", results[1:])
        self.report.note(f"pgbench -C opened {results[1].processed} connections, each a fresh route lookup")
        delta = {result: after.get(f'pgsni_routes_reload_total{{result="{result}"}}', 0.0)
                 - before.get(f'pgsni_routes_reload_total{{result="{result}"}}', 0.0) for result in ("ok", "error")}
        self.report.check(
            "reload/reloads", 0 < delta["ok"] <= rewrites,
            f"{delta['ok']:.0f} reloads counted (pgsni_routes_reload_total{{result=\"ok\"}}) for {rewrites} "
            f"rewrites ({pct(delta['ok'], rewrites)}; rewrites within the 100 ms debounce are read as one)",
            "at least one, at most one per rewrite")
        self.report.check("reload/errors", delta["error"] == 0,
                          f"{delta['error']:.0f} reloads refused (pgsni_routes_reload_total{{result=\"error\"}})", "0")
        routes = after.get("pgsni_routes")
        self.report.check("reload/last-version", routes == expected_routes,
                          f"pgsni_routes {routes} after the storm, the last version having {expected_routes}",
                          "the last version in force")
        self.report.check("reload/alive", broker.alive(), f"pid {broker.pids[0]} alive: {broker.alive()}", "alive")

    # -- garbage ----------------------------------------------------------------

    def proof_garbage(self) -> None:
        """Hostile connections during pgbench: no crash, no failed
        transaction, every waiting connection closed by the deadline, and
        nothing leaked."""
        broker = Broker(self, "garbage", self.routes_file("garbage", routes_text(self.bench.pg_port)))
        try:
            self._garbage(broker)
        finally:
            broker.stop()

    def _hostile_garbage(self, broker: Broker, label: str, *extra: str) -> Hostile:
        return Hostile(self, label, [
            "garbage", "--port", str(broker.port), "--deadline", f"{self.deadline:g}",
            "--wait", str(self.deadline + 5), "--seed", str(self.args.seed), "--spread-sources", *extra])

    def _garbage(self, broker: Broker) -> None:
        a = self.args
        # Warm-up: every path once (pgbench -C, and one connection of every
        # kind of garbage), so that whatever the broker starts lazily is in
        # the baseline.
        pgbench(self, "garbage-warm-up", broker.port, ["-C", "-c", "2", "-j", "2"], 2)
        self._hostile_garbage(broker, "garbage-warm-up", "--once").finish(timeout=self.deadline + 60)
        broker.wait_for(lambda: broker.total("pgsni_open_connections") == 0, self.deadline + 10)
        base = {s: broker.least(s) for s in ("pgsni_open_connections", "pgsni_runtime_tasks", "process_open_fds")}
        base_proc = min(broker.fds() for _ in range(5))
        before = broker.scrape()[0]
        self.report.note(
            f"baseline: {base['pgsni_open_connections']:.0f} open connections, {base['pgsni_runtime_tasks']:.0f} "
            f"runtime tasks, {base['process_open_fds']:.0f} descriptors ({base_proc} in /proc)")

        log(f"garbage: {a.garbage_concurrency} hostile connections at a time, at most {a.garbage_rate:g}/s, "
            f"for {a.garbage_seconds} s, with pgbench")
        hostile = self._hostile_garbage(broker, "garbage", "--concurrency", str(a.garbage_concurrency),
                                        "--rate", str(a.garbage_rate))
        runs = [Pgbench(self, "garbage-persistent", broker.port, PGBENCH_STORM, a.garbage_seconds),
                Pgbench(self, "garbage-C", broker.port, ["-C", *PGBENCH_STORM], a.garbage_seconds)]
        results = [r.wait() for r in runs]
        for r in results:
            log(f"pgbench {r.label}: {r.describe()}")
        records = hostile.finish(timeout=self.deadline + 60)

        def settled() -> bool:
            return all(broker.total(s) == v for s, v in base.items()) and broker.fds() == base_proc

        settle_started = time.monotonic()
        broker.wait_for(settled, self.deadline + 10)
        settle = time.monotonic() - settle_started
        final = {s: broker.least(s) for s in base}
        final_proc = min(broker.fds() for _ in range(5))
        after = broker.scrape()[0]
        self._garbage_report(broker, results, records, base, base_proc, final, final_proc, settle, before, after)

    def _garbage_report(self, broker: Broker, results: list[PgbenchResult], records: list[dict],
                        base: dict[str, float], base_proc: int, final: dict[str, float], final_proc: int,
                        settle: float, before: dict[str, float], after: dict[str, float]) -> None:
        a = self.args
        health = http_get(broker.metrics_ports[0], "/healthz")[0] if broker.alive() else 0
        self.report.check("garbage/alive", broker.alive() and health == 200,
                          f"pid {broker.pids[0]} running: {broker.alive()}, /healthz {health}",
                          "the same process alive, /healthz 200")
        self.pgbench_check("garbage/pgbench", results[:1])
        self.pgbench_check("garbage/pgbench-C", results[1:])

        self.report.note(f"{len(records)} hostile connections in {a.garbage_seconds} s "
                         f"({len(records) / a.garbage_seconds:.0f}/s) of {len({r['kind'] for r in records})} kinds:")
        kinds: dict[str, list[dict]] = {}
        for r in records:
            kinds.setdefault(r["kind"], []).append(r)
        for kind, rs in sorted(kinds.items()):
            times = [r["closed_after"] for r in rs if r["closed_after"] is not None]
            replies = sorted({r["reply"][:10] for r in rs if r["how"] != "connect_failed"})
            self.report.note(
                f"  {kind:<24} {rs[0]['mode']:<5} {len(rs):>6}  "
                + (f"closed by the broker after max {max(times):.3f} s" if times else "closed by the client")
                + f"; replies {', '.join(r or '(none)' for r in replies[:3])}{' ...' if len(replies) > 3 else ''}")

        waiting = [r for r in records if r["mode"] in ("stall", "half") and r["how"] != "connect_failed"]
        late = [r for r in waiting if r["closed_after"] is None or r["closed_after"] > self.deadline + LATE_SLACK]
        times = [r["closed_after"] for r in waiting if r["closed_after"] is not None]
        self.report.check(
            "garbage/closed", bool(waiting) and not late,
            f"{len(waiting) - len(late)} of {len(waiting)} connections that wait for the broker closed in time "
            f"({fmt_s(times)})" + (f"; late or open: {sorted({r['kind'] for r in late})}" if late else ""),
            f"closed within the deadline + {LATE_SLACK:g} s = {self.deadline + LATE_SLACK:g} s")
        failed = [r for r in records if r["how"] == "connect_failed"]
        self.report.check(
            "garbage/accepted", not failed,
            f"{len(failed)} of {len(records)} hostile connects failed"
            + (f" (e.g. {failed[0]['error']})" if failed else ""), "0")

        self.report.check(
            "garbage/connections", final["pgsni_open_connections"] == base["pgsni_open_connections"],
            f"pgsni_open_connections {final['pgsni_open_connections']:.0f} after the storm, "
            f"{base['pgsni_open_connections']:.0f} before", "back to the baseline")
        self.report.check(
            "garbage/tasks", final["pgsni_runtime_tasks"] == base["pgsni_runtime_tasks"],
            f"pgsni_runtime_tasks {final['pgsni_runtime_tasks']:.0f} after, {base['pgsni_runtime_tasks']:.0f} "
            "before", "back to the baseline")
        self.report.check(
            "garbage/fds", final["process_open_fds"] == base["process_open_fds"] and final_proc == base_proc,
            f"process_open_fds {final['process_open_fds']:.0f} after, {base['process_open_fds']:.0f} before; "
            f"/proc/{broker.pids[0]}/fd {final_proc} after, {base_proc} before "
            f"(settled {settle:.1f} s after the storm)", "back to the baseline")
        accept_errors = sum(v for k, v in after.items() if k.startswith("pgsni_accept_errors_total")) - \
            sum(v for k, v in before.items() if k.startswith("pgsni_accept_errors_total"))
        self.report.note(f"accept errors during the storm: {accept_errors:.0f}")
        self.outcome_deltas(outcomes(before), outcomes(after))

    # -- shared -----------------------------------------------------------------

    def outcome_deltas(self, before: dict[str, float], after: dict[str, float]) -> None:
        deltas = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))}
        shown = ", ".join(f"{k} {v:+.0f}" for k, v in sorted(deltas.items(), key=lambda kv: -kv[1]) if v)
        self.report.note(f"pgsni_connections_total by outcome: {shown or 'no change'}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    harness.raise_nofile()

    # As the harness does: SIGTERM and SIGHUP unwind like Ctrl-C, through the
    # clean-up below, and the soak stops if whoever started it dies.
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    harness._libc.prctl(harness._PR_SET_PDEATHSIG, signal.SIGTERM)

    binaries = [args.target_dir / "release" / "pgsni"]
    binaries += [args.target_dir / "release" / "examples" / e for e in ("tls_tenant", "idle_clients")]
    missing = [str(b) for b in binaries if not os.access(b, os.X_OK)]
    if missing:
        print(f"missing binaries (build them first, e.g. via benches/soak/run.sh): {', '.join(missing)}",
              file=sys.stderr)
        return 2

    soak = Soak(args)
    sizes = (f"idle {args.idle}, stallers {args.stallers} x {args.rounds} rounds of {args.duration} s, "
             f"reload {args.reload_seconds} s every {args.reload_interval * 1000:.0f} ms, garbage "
             f"{args.garbage_seconds} s ({args.garbage_concurrency} at a time, at most {args.garbage_rate:g}/s), "
             f"--handshake-timeout {args.handshake_timeout:g}s")
    header = [
        f"pgsni soak{' (quick)' if args.quick else ''}: {', '.join(args.only)}",
        f"machine: {os.cpu_count()} CPUs, load average {' '.join(open('/proc/loadavg').read().split()[:3])}, "
        f"open files soft {soak.fd_soft} / hard {soak.fd_hard}",
        f"sizes: {sizes}",
        f"binary: {args.target_dir / 'release' / 'pgsni'}",
    ]
    for line in header:
        print(line, flush=True)
    started = time.monotonic()
    try:
        soak.setup()
        for proof in PROOFS:
            if proof in args.only:
                print(f"\n== {proof} ==", flush=True)
                getattr(soak, f"proof_{proof}")()
    except SetupError as error:
        soak.report.check("setup", False, str(error).splitlines()[0], "no set-up error")
        print(f"\nerror: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_all()
        if not args.keep_data:
            shutil.rmtree(soak.bench.pg_base, ignore_errors=True)

    report = soak.report
    passed = sum(line.startswith("PASS") for line in report.lines)
    summary = (f"\nsoak: {passed} checks passed, {len(report.failed)} failed, "
               f"in {(time.monotonic() - started) / 60:.1f} min")
    print(summary)
    for line in report.failed:
        print(f"  {line}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.txt").write_text("\n".join(header + report.lines) + summary + "\n")
    print(f"written: {args.out / 'results.txt'}; logs in {soak.bench.logs}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
