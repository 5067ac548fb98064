#!/usr/bin/env python3
"""pgsni benchmark harness: PostgreSQL over TLS on loopback, direct, through
pgsni, and through HAProxy in TCP mode (the L4 baseline).

Normally started by benches/pgbench/run.sh, which installs what is missing
and builds the binaries first. Everything runs on 127.0.0.1:

  * a TLS PostgreSQL server (initdb'd into the output directory, run as the
    `postgres` OS user, `pgbench -i -s 10`);
  * one pgsni per variant (`--variant`, default: one) routing the tenant name
    to it, and one HAProxy (`mode tcp`, `nbthread 1`) forwarding to it;
  * for the idle-session scenario, a light rustls tenant
    (examples/tls_tenant.rs) and a client that holds N TLS sessions open
    (examples/idle_clients.rs), with fresh proxies in front of the tenant.

Scenarios (rounds are interleaved: for each round, every path in turn, so
that drifting background load hits all paths alike):

  S1  pgbench -S -c 8 -j 2, persistent connections      (tps)
  S2  pgbench -S -C -c 4 -j 2, one connection per txn    (tps)
  S3  COPY (...) TO STDOUT of --bulk-mb through psql     (MB/s)
  S4  RSS of each proxy per idle TLS session             (KiB/session)
  S5  proxy CPU time per forwarded GB (from S3) and per accepted
      connection (from S2); selecting S5 runs S2 and S3

Output: a table on stdout, results.csv, results.txt and ratios.png in the
output directory, plus logs/ with every server log and pgbench output.
The exit status is 1 when any transaction, COPY or idle session failed (or
setup broke), 3 when --strict is given and a target was missed, else 0.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import fcntl
import os
import platform
import pwd
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
TENANT = "bench.db.example.com"
PG_USER = "postgres"
PG_DB = "postgres"


# Open files wanted for every process (the idle scenario needs two
# descriptors per session in each proxy). Capped at the hard limit.
WANTED_NOFILE = 200_000

# Descriptors a proxy needs besides two per session: listeners, epoll,
# logs, metrics, a little slack. HAProxy refuses to start when
# 2 * maxconn + its own overhead exceeds the limit, so keep well under.
FD_RESERVE = 128

SCENARIOS = ("S1", "S2", "S3", "S4", "S5")


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclass
class Variant:
    """One pgsni configuration under test."""

    name: str  # path label: "pgsni" or "pgsni:NAME"
    binary: Path
    args: list[str]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benches/pgbench/run.sh",
        description="Benchmark PostgreSQL over TLS: direct vs pgsni vs HAProxy (TCP mode).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""run.sh itself also takes --no-build (use the binaries already built).

examples:
  benches/pgbench/run.sh                                  # the full default run
  benches/pgbench/run.sh --rounds 1 --duration 3 --bulk-mb 100 --idle 1000
  benches/pgbench/run.sh --only S1,S3 --pgsni-args "--handshake-timeout 5s"
  benches/pgbench/run.sh --variant base@/tmp/pgsni-base= --variant new=""
""",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per pgbench run (default 10)")
    p.add_argument("--bulk-mb", type=int, default=1000, help="MB (10^6 bytes) per COPY run (default 1000)")
    p.add_argument("--row-bytes", type=int, default=8000, help="bytes per COPY row (default 8000)")
    p.add_argument("--idle", type=int, default=10_000, help="idle TLS sessions for S4 (default 10000)")
    p.add_argument("--idle-echo", type=int, default=16384,
                   help="S4 also measures sessions that echoed this many bytes before going idle (default 16384, 0: off)")
    p.add_argument("--idle-concurrency", type=int, default=200, help="sessions opened at a time in S4 (default 200)")
    p.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "target" / "pgbench-harness",
        help="output directory (default target/pgbench-harness)",
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. S1,S3 (default all)")
    p.add_argument("--pgsni-args", default="", help="extra arguments for every `pgsni serve` (one string)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[@BINARY]=ARGS",
        help="a pgsni variant to compare, repeatable: its own `pgsni serve` arguments and "
        "optionally its own binary; each becomes a path `pgsni:NAME` (default: one path `pgsni`)",
    )
    p.add_argument(
        "--target-dir",
        type=Path,
        default=Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")),
        help="cargo target directory holding release/pgsni and release/examples/ (default $CARGO_TARGET_DIR or target)",
    )
    p.add_argument("--pg-bindir", type=Path, default=None, help="PostgreSQL server binaries (default: found like the tests)")
    p.add_argument("--keep-data", action="store_true", help="keep the PostgreSQL data directory afterwards")
    p.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    args = p.parse_args(argv)

    args.only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    for name in ("rounds", "duration", "bulk_mb", "row_bytes", "idle", "idle_concurrency", "scale"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.idle_echo < 0:
        p.error("--idle-echo must not be negative")
    args.out = args.out.resolve()
    args.target_dir = args.target_dir.resolve()

    common = shlex.split(args.pgsni_args)
    default_bin = args.target_dir / "release" / "pgsni"
    if not args.variant:
        args.variants = [Variant("pgsni", default_bin, common)]
    else:
        args.variants = []
        for spec in args.variant:
            head, sep, rest = spec.partition("=")
            name, _, binary = head.partition("@")
            if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                p.error(f"--variant {spec!r}: expected NAME[@BINARY]=ARGS with NAME of letters, digits, _ . -")
            path = Path(binary).resolve() if binary else default_bin
            args.variants.append(Variant(f"pgsni:{name}", path, common + shlex.split(rest)))
        names = [v.name for v in args.variants]
        if len(set(names)) != len(names):
            p.error("--variant names must be distinct")
    return args


# ---------------------------------------------------------------------------
# Processes: every child dies with the harness
# ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_harness(sig: int) -> Callable[[], None]:
    """A preexec hook: the child gets `sig` when the harness dies, even by
    SIGKILL, so that nothing outlives a crashed or killed run. (Runs after
    Popen's user switch, which would otherwise clear the setting.)"""

    def hook() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, sig)

    return hook


class Service:
    """A long-running child process (server or proxy) with its log file."""

    registry: list["Service"] = []

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGKILL,
        user: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[Path] = None,
        stdin=subprocess.DEVNULL,
        stdout=None,
    ) -> None:
        self.name = name
        self.log = log
        self.stop_signal = stop_signal
        self._log_file = open(log, "ab")
        self.popen = subprocess.Popen(
            argv,
            # Unbuffered: line protocols on pipes are read with select().
            bufsize=0,
            stdin=stdin,
            stdout=stdout if stdout is not None else self._log_file,
            stderr=self._log_file,
            env=env,
            cwd=cwd,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            # Own process group: a Ctrl-C in the terminal reaches only the
            # harness, which then stops everything in order.
            start_new_session=True,
            preexec_fn=_die_with_harness(death_signal),
        )
        Service.registry.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            try:
                self.popen.send_signal(self.stop_signal)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(self.pid)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        if self.popen.stdin:
            self.popen.stdin.close()
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log_file.close()
        if self in Service.registry:
            Service.registry.remove(self)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    """Stops every service still running, newest first (proxies before the
    servers behind them). A second Ctrl-C or SIGTERM must not cut this short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for service in reversed(list(Service.registry)):
        try:
            service.stop()
        except Exception as error:  # keep going: the rest must stop too
            print(f"warning: stopping {service.name}: {error}", file=sys.stderr)
            _killpg(service.pid)


def run(argv: list[str], *, timeout: float, env=None, user=None, cwd=None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Runs a short-lived command to completion (killed on timeout)."""
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout == subprocess.PIPE else None,
        env=env,
        cwd=cwd,
        user=user,
        group=user,
        extra_groups=[] if user else None,
        timeout=timeout,
        preexec_fn=_die_with_harness(signal.SIGKILL),
        text=stdout == subprocess.PIPE,
    )


def check_run(argv: list[str], what: str, **kwargs) -> str:
    result = run(argv, **kwargs)
    if result.returncode != 0:
        raise SetupError(f"{what} failed (exit {result.returncode}):\n{result.stdout}")
    return result.stdout or ""


class SetupError(Exception):
    pass


# ---------------------------------------------------------------------------
# Small helpers: ports, /proc, metrics
# ---------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago (all bound at
    once, so the kernel cannot hand out the same one twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_port(port: int, service: Service, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise SetupError(f"{service.name} exited during start-up:\n{service.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SetupError(f"{service.name} is not accepting on port {port} after {timeout:.0f} s:\n{service.tail()}")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the parenthesised command name; utime and stime are
        # fields 14 and 15 of the whole line.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SetupError(f"no VmRSS for pid {pid}")


def pgbench_summary(output: str) -> tuple[Optional[float], int, int]:
    """From pgbench's report: tps (None when there is none), failed
    transactions, and transactions processed."""
    tps = re.search(r"^tps = ([0-9.]+) \(", output, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.M)
    processed = re.search(r"^number of transactions actually processed: (\d+)", output, re.M)
    return (
        float(tps.group(1)) if tps else None,
        int(failed.group(1)) if failed else 0,
        int(processed.group(1)) if processed else 0,
    )


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pgsni_accepted(metrics_port: int) -> int:
    """Connections pgsni has accepted, from /metrics (every outcome)."""
    text = _no_proxy.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("pgsni_connections_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def haproxy_accepted(stats_socket: Path) -> int:
    """Connections HAProxy's frontend has accepted (`show stat`, stot)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(stats_socket))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("svname") == "FRONTEND":
            return int(row["stot"])
    raise SetupError("no FRONTEND row in HAProxy's stats")


# ---------------------------------------------------------------------------
# The environment: certificates, PostgreSQL, proxies
# ---------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One way to reach the tenant: directly or through a proxy."""

    name: str  # "direct", "pgsni", "pgsni:NAME", "haproxy"
    port: int
    service: Optional[Service] = None  # the proxy, None for direct
    accepted: Optional[Callable[[], int]] = None  # connections the proxy accepted so far

    @property
    def is_proxy(self) -> bool:
        return self.service is not None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.logs = self.out / "logs"
        self.runs = self.logs / "runs"
        self.certs = self.out / "certs"
        self.conf = self.out / "conf"
        self.pg_base = self.out / "pg"
        self.pg_bindir = args.pg_bindir or find_pg_bindir()
        self.failures: list[str] = []
        self.results: list[Result] = []
        self.paths: list[Endpoint] = []
        self.postgres: Optional[Service] = None
        self.pg_port = 0
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.fd_limit = nofile
        self.idle_sessions = min(args.idle, max(1, (nofile - FD_RESERVE) // 2))
        self.haproxy_maxconn = self.idle_sessions + 16

    # -- set-up -------------------------------------------------------------

    def prepare_dirs(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        # Only what this harness owns is cleared; results are overwritten.
        for stale in (self.logs, self.pg_base, self.certs, self.conf):
            shutil.rmtree(stale, ignore_errors=True)
        self.runs.mkdir(parents=True)
        self.certs.mkdir()
        self.conf.mkdir()

    def make_certs(self, extra_names: tuple[str, ...] = ()) -> None:
        """A throw-away CA and a leaf for the tenant name, and for
        `extra_names` if any (ECDSA P-256)."""
        c = self.certs
        ext = c / "leaf.ext"
        ext.write_text(
            f"subjectAltName = {', '.join(f'DNS:{name}' for name in (TENANT, *extra_names))}\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        check_run(
            ["openssl", "req", "-x509", *ec, "-keyout", c / "ca.key", "-out", c / "ca.crt",
             "-days", "7", "-subj", "/CN=pgsni benchmark CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            "openssl (CA)", timeout=60)
        check_run(
            ["openssl", "req", "-new", *ec, "-keyout", c / "server.key", "-out", c / "server.csr",
             "-subj", f"/CN={TENANT}"],
            "openssl (leaf request)", timeout=60)
        check_run(
            ["openssl", "x509", "-req", "-in", c / "server.csr", "-CA", c / "ca.crt",
             "-CAkey", c / "ca.key", "-CAcreateserial", "-days", "7", "-extfile", ext,
             "-out", c / "server.crt"],
            "openssl (leaf)", timeout=60)

    def start_postgres(self) -> None:
        """initdb, TLS on, trust over hostssl from loopback, start, pgbench -i."""
        pg_user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        user = "postgres" if pg_user else None
        data = self.pg_base / "data"
        self.pg_base.mkdir()
        if pg_user:
            os.chown(self.pg_base, pg_user.pw_uid, pg_user.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.pg_base)}
        log(f"initdb into {data}")
        check_run(
            [self.pg_bindir / "initdb", "-D", data, "--username", PG_USER, "--auth", "trust",
             "--encoding", "UTF8", "--locale", "C", "--no-sync"],
            "initdb", timeout=300, env=env, user=user, cwd=self.pg_base)

        for name, mode in (("server.crt", 0o644), ("server.key", 0o600)):
            target = data / name
            shutil.copyfile(self.certs / name, target)
            os.chmod(target, mode)
            if pg_user:
                os.chown(target, pg_user.pw_uid, pg_user.pw_gid)
        (data / "pg_hba.conf").write_text(
            "# pgsni benchmark: TLS from loopback only, no passwords\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "host    all all 127.0.0.1/32 reject\n"
        )
        self.pg_port = free_port()
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# pgsni benchmark\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.pg_port}\n"
                "unix_socket_directories = ''\n"  # TCP + TLS only
                "max_connections = 100\n"
                "shared_buffers = 256MB\n"  # holds the whole scale-10 data set
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "autovacuum = off\n"  # nothing writes during the runs
                "ssl = on\n"
                "ssl_cert_file = 'server.crt'\n"
                "ssl_key_file = 'server.key'\n"
                "logging_collector = off\n"
            )
        # The postmaster is our child (not daemonised by pg_ctl), so it is
        # reaped; SIGINT = fast shutdown, SIGQUIT if the harness dies.
        self.postgres = Service(
            "postgres",
            [str(self.pg_bindir / "postgres"), "-D", str(data)],
            self.logs / "postgres.log",
            stop_signal=signal.SIGINT,
            death_signal=signal.SIGQUIT,
            user=user,
            env=env,
            cwd=self.pg_base,
        )
        wait_port(self.pg_port, self.postgres, timeout=60)
        deadline = time.monotonic() + 60
        while run(["psql", "-X", "-A", "-t", "-c", "SELECT 1"], env=self.libpq_env(self.pg_port), timeout=30).returncode != 0:
            if time.monotonic() > deadline or not self.postgres.alive():
                raise SetupError(f"PostgreSQL did not come up:\n{self.postgres.tail()}")
            time.sleep(0.2)
        log(f"PostgreSQL on 127.0.0.1:{self.pg_port}; pgbench -i -s {self.args.scale}")
        out = check_run([self.pg_bindir / "pgbench", "-i", "-q", "-s", str(self.args.scale)],
                        "pgbench -i", env=self.libpq_env(self.pg_port), timeout=1800)
        (self.runs / "pgbench-init.txt").write_text(out)

    def libpq_env(self, port: int) -> dict[str, str]:
        """libpq settings for the tenant on `port`: the host is a name (so
        libpq sends SNI) dialled at 127.0.0.1; TLS required, and since a root
        certificate is given, the CA is checked too."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=TENANT,
            PGHOSTADDR="127.0.0.1",
            PGPORT=str(port),
            PGUSER=PG_USER,
            PGDATABASE=PG_DB,
            PGSSLMODE="require",
            PGSSLROOTCERT=str(self.certs / "ca.crt"),
            PGCONNECT_TIMEOUT="10",
            LC_ALL="C",
        )
        return env

    def start_pgsni(self, variant: Variant, backend_port: int, tag: str) -> Endpoint:
        routes = self.conf / f"{tag}.toml"
        routes.write_text(
            "# pgsni benchmark: the one tenant\n"
            "[[route]]\n"
            f'server_name = "{TENANT}"\n'
            f'backends = ["127.0.0.1:{backend_port}"]\n'
        )
        port, metrics_port = free_ports(2)
        # The production default level: one line per session when it ends.
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        service = Service(
            variant.name,
            [str(variant.binary), "serve", "--listen", f"127.0.0.1:{port}", "--routes", str(routes),
             "--metrics-listen", f"127.0.0.1:{metrics_port}", *variant.args],
            self.logs / f"{tag}.log",
            env=env,
        )
        wait_port(port, service)
        return Endpoint(variant.name, port, service, lambda: pgsni_accepted(metrics_port))

    def start_haproxy(self, backend_port: int, tag: str) -> Endpoint:
        port = free_port()
        stats = self.conf / f"{tag}.sock"
        cfg = self.conf / f"{tag}.cfg"
        cfg.write_text(
            f"""# pgsni benchmark: the L4 baseline, plain TCP forwarding on one thread
global
    nbthread 1
    maxconn {self.haproxy_maxconn}
    stats socket {stats} mode 600 level user

defaults
    mode tcp
    timeout connect 5s
    # Long enough that idle sessions are never cut during a run.
    timeout client 2h
    timeout server 2h
    timeout tunnel 2h

frontend tenant
    bind 127.0.0.1:{port}
    default_backend tenant

backend tenant
    server tenant 127.0.0.1:{backend_port}
"""
        )
        check_run(["haproxy", "-c", "-q", "-f", cfg], "haproxy -c", timeout=30)
        service = Service("haproxy", ["haproxy", "-db", "-f", str(cfg)], self.logs / f"{tag}.log")
        wait_port(port, service)
        return Endpoint("haproxy", port, service, lambda: haproxy_accepted(stats))

    def start_paths(self) -> None:
        self.paths = [Endpoint("direct", self.pg_port)]
        for i, variant in enumerate(self.args.variants):
            self.paths.append(self.start_pgsni(variant, self.pg_port, f"pgsni-{i}"))
        self.paths.append(self.start_haproxy(self.pg_port, "haproxy"))
        for path in self.paths:
            # Proves each path reaches the tenant over TLS, and warms it up.
            result = run(
                ["psql", "-X", "-A", "-t", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
                env=self.libpq_env(path.port), timeout=30)
            if result.returncode != 0 or result.stdout.strip() != "t":
                raise SetupError(f"{path.name}: no TLS session to the tenant through port {path.port}:\n{result.stdout}")
            log(f"path {path.name:<14} 127.0.0.1:{path.port}  TLS ok")

    # -- scenarios ----------------------------------------------------------

    def pgbench(self, scenario: str, path: Endpoint, rnd: int, extra: list[str], duration: int) -> Optional[dict]:
        argv = [str(self.pg_bindir / "pgbench"), "-n", "-S", *extra, "-T", str(duration)]
        try:
            result = run(argv, env=self.libpq_env(path.port), timeout=duration + 120)
            output, rc = result.stdout, result.returncode
        except subprocess.TimeoutExpired as error:
            output, rc = str(error.output or ""), -1
        name = f"pgbench-{scenario}-r{rnd}-{path.name.replace(':', '_')}.txt"
        env = " ".join(f"{k}={v}" for k, v in self.libpq_env(path.port).items() if k.startswith("PG"))
        (self.runs / name).write_text(f"$ {env} {shlex.join(argv)}\n{output}\n[exit {rc}]\n")
        tps, n_failed, processed = pgbench_summary(output)
        if rc != 0 or tps is None or n_failed:
            self.failures.append(
                f"{scenario} round {rnd} {path.name}: pgbench exit {rc}, {n_failed} failed transactions "
                f"(see logs/runs/{name})")
        if tps is None:
            return None
        return {"tps": tps, "processed": processed}

    def warm_up(self) -> None:
        log("warm-up: 2 s of pgbench -S on each path")
        for path in self.paths:
            self.pgbench("warmup", path, 0, ["-c", "8", "-j", "2"], 2)

    def scenario_pgbench(self, scenario: str, extra: list[str], title: str) -> dict[str, list[float]]:
        """Interleaved pgbench rounds; returns proxy CPU ms per accepted
        connection per path (used by S5)."""
        tps: dict[str, list[float]] = {p.name: [] for p in self.paths}
        cpu_per_conn: dict[str, list[float]] = {p.name: [] for p in self.paths if p.is_proxy}
        for rnd in range(1, self.args.rounds + 1):
            for path in self.paths:
                before = self.proxy_sample(path)
                res = self.pgbench(scenario, path, rnd, extra, self.args.duration)
                after = self.proxy_sample(path)
                if res:
                    tps[path.name].append(res["tps"])
                line = f"{scenario} round {rnd}/{self.args.rounds} {path.name:<14} " + (
                    f"{res['tps']:10.1f} tps" if res else "failed")
                if path.is_proxy and before and after:
                    conns = after[1] - before[1]
                    if conns > 0:
                        cpu_per_conn[path.name].append((after[0] - before[0]) * 1000 / conns)
                        line += f"   proxy CPU {(after[0] - before[0]):.2f} s for {conns} connections"
                log(line)
        self.add(scenario, title, "tps", tps)
        return cpu_per_conn

    def scenario_bulk(self) -> dict[str, list[float]]:
        """S3: COPY ... TO STDOUT through psql; returns proxy CPU s per GB."""
        # Rows of --row-bytes 'x', plus the newline COPY adds, until
        # --bulk-mb megabytes (10^6 bytes) have been produced.
        row = self.args.row_bytes
        rows = -(-self.args.bulk_mb * 1_000_000 // (row + 1))
        expected = rows * (row + 1)
        sql = f"COPY (SELECT repeat('x', {row}) FROM generate_series(1, {rows})) TO STDOUT"
        mbps: dict[str, list[float]] = {p.name: [] for p in self.paths}
        cpu_per_gb: dict[str, list[float]] = {p.name: [] for p in self.paths if p.is_proxy}
        for rnd in range(1, self.args.rounds + 1):
            for path in self.paths:
                before = self.proxy_sample(path)
                seconds, received, rc, err = self.copy_out(path, sql)
                after = self.proxy_sample(path)
                if rc != 0 or received < expected:
                    self.failures.append(
                        f"S3 round {rnd} {path.name}: psql exit {rc}, {received} of {expected} bytes: {err.strip()[:300]}")
                    log(f"S3 round {rnd}/{self.args.rounds} {path.name:<14} failed")
                    continue
                rate = received / 1e6 / seconds
                mbps[path.name].append(rate)
                line = f"S3 round {rnd}/{self.args.rounds} {path.name:<14} {rate:10.1f} MB/s ({seconds:.2f} s)"
                if path.is_proxy and before and after:
                    # Per GB of COPY data delivered; the wire carries a few
                    # percent more (TLS records, protocol framing), alike
                    # through both proxies.
                    cpu = after[0] - before[0]
                    cpu_per_gb[path.name].append(cpu / (received / 1e9))
                    line += f"   proxy CPU {cpu:.2f} s"
                log(line)
        self.add("S3", f"COPY TO STDOUT, {self.args.bulk_mb} MB", "MB/s", mbps)
        return cpu_per_gb

    def copy_out(self, path: Endpoint, sql: str) -> tuple[float, int, int, str]:
        """Runs the COPY through psql and counts what arrives on its stdout."""
        argv = ["psql", "-X", "-q", "-c", sql]
        err_log = self.runs / f"copy-{path.name.replace(':', '_')}.err"
        with open(err_log, "ab") as err:
            start = time.monotonic()
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, bufsize=0,
                env=self.libpq_env(path.port), start_new_session=True,
                preexec_fn=_die_with_harness(signal.SIGKILL))
            try:
                try:
                    # A bigger pipe means fewer wake-ups for psql and for us.
                    fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
                except OSError:
                    pass
                received = 0
                buf = bytearray(1 << 20)
                deadline = start + max(600, self.args.bulk_mb / 5)  # ≥ 5 MB/s or give up
                while n := proc.stdout.readinto(buf):
                    received += n
                    if time.monotonic() > deadline:
                        proc.kill()
                        break
                rc = proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            seconds = time.monotonic() - start
        return seconds, received, rc, err_log.read_text(errors="replace")[-300:] if rc else ""

    def proxy_sample(self, path: Endpoint) -> Optional[tuple[float, int]]:
        """(CPU seconds, connections accepted) of a proxy; None for direct."""
        if not path.is_proxy:
            return None
        return cpu_seconds(path.service.pid), path.accepted()

    def scenario_idle(self) -> None:
        """S4: resident memory per idle TLS session, fresh proxies in front of
        the light rustls tenant."""
        tenant, tenant_port = self.start_tls_tenant()
        n = self.idle_sessions
        if n < self.args.idle:
            log(f"S4: {n} idle sessions instead of {self.args.idle}: the open-files limit is {self.fd_limit} "
                f"and each proxy needs two descriptors per session")

        # Two kinds of idle session: straight after the handshake (what a
        # connection storm leaves behind), and after --idle-echo bytes went
        # through both ways (what a pool that has run queries leaves behind:
        # every buffer on the path has been used).
        kinds = [(0, "handshake only")]
        if self.args.idle_echo:
            kinds.append((self.args.idle_echo, f"after a {self.args.idle_echo}-byte echo"))
        names = [v.name for v in self.args.variants] + ["haproxy"]
        per_session = {kind: {name: [] for name in names} for _, kind in kinds}
        starters: list[tuple[str, Callable[[str], Endpoint]]] = [
            (v.name, lambda tag, i=i, v=v: self.start_pgsni(v, tenant_port, f"idle-pgsni-{i}-{tag}"))
            for i, v in enumerate(self.args.variants)
        ]
        starters.append(("haproxy", lambda tag: self.start_haproxy(tenant_port, f"idle-haproxy-{tag}")))
        for rnd in range(1, self.args.rounds + 1):
            for name, start in starters:
                for echo, kind in kinds:
                    kib = self.measure_idle(start(f"r{rnd}-echo{echo}"), n, echo, f"{name} r{rnd}")
                    if kib is not None:
                        per_session[kind][name].append(kib)
                    log(f"S4 round {rnd}/{self.args.rounds} {name:<14} {kind}: "
                        + ("failed" if kib is None else f"{kib:.2f} KiB/session"))
        tenant.stop()
        for _, kind in kinds:
            self.add("S4", f"RSS per idle TLS session, {kind} ({n} sessions)", "KiB", per_session[kind])

    def start_tls_tenant(self) -> tuple[Service, int]:
        """The light rustls tenant (examples/tls_tenant) with the tenant's
        certificate, on a free port; returns it and its port."""
        examples = self.args.target_dir / "release" / "examples"
        tenant = Service(
            "tls_tenant",
            [str(examples / "tls_tenant"), "--listen", "127.0.0.1:0",
             "--cert", str(self.certs / "server.crt"), "--key", str(self.certs / "server.key")],
            self.logs / "tls_tenant.log",
            stdout=subprocess.PIPE,
        )
        line = tenant.popen.stdout.readline().decode()
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            raise SetupError(f"tls_tenant did not start: {line!r}\n{tenant.tail()}")
        return tenant, int(m.group(1))

    def measure_idle(self, proxy: Endpoint, n: int, echo: int, label: str) -> Optional[float]:
        """Opens `n` idle sessions through a fresh proxy; returns the growth
        of its resident memory per session (KiB), then stops the proxy."""
        try:
            # Warm-up: worker threads, lazy statics, the first allocator
            # arenas; then the baseline.
            IdleClients(self, proxy, 20, echo, f"{label} warm-up").close()
            time.sleep(1.0)
            base = rss_kib(proxy.service.pid)
            clients = IdleClients(self, proxy, n, echo, label)
            time.sleep(2.0)  # let the last sessions settle
            alive = clients.alive()
            loaded = rss_kib(proxy.service.pid)
            clients.close()
        finally:
            proxy.service.stop()
        if alive < n:
            self.failures.append(f"S4 {label} echo {echo}: only {alive} of {n} idle sessions held")
        if not alive:
            return None
        log(f"S4 {label}: RSS {base / 1024:.1f} MiB before, {loaded / 1024:.1f} MiB with {alive} sessions")
        return (loaded - base) / alive

    # -- results ------------------------------------------------------------

    def add(self, scenario: str, title: str, unit: str, values: dict[str, list[float]]) -> None:
        for path, vals in values.items():
            self.results.append(Result(scenario, title, path, unit, vals))


class IdleClients:
    """examples/idle_clients holding `count` sessions through a proxy."""

    def __init__(self, bench: Bench, proxy: Endpoint, count: int, echo: int, label: str,
                 server_name: str = TENANT) -> None:
        examples = bench.args.target_dir / "release" / "examples"
        self.service = Service(
            f"idle_clients ({label})",
            [str(examples / "idle_clients"), "--connect", f"127.0.0.1:{proxy.port}",
             "--server-name", server_name, "--ca", str(bench.certs / "ca.crt"), "--count", str(count),
             "--concurrency", str(bench.args.idle_concurrency), "--echo", str(echo)],
            bench.logs / "idle_clients.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = self._read_line(timeout=max(120.0, count / 50))
        m = re.match(r"opened ok=(\d+) failed=(\d+) seconds=([0-9.]+)", line)
        if not m:
            raise SetupError(f"idle_clients ({label}): unexpected {line!r}\n{self.service.tail()}")
        self.ok = int(m.group(1))

    def _read_line(self, timeout: float) -> str:
        stdout = self.service.popen.stdout
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise SetupError(f"{self.service.name}: no answer after {timeout:.0f} s\n{self.service.tail()}")
        return stdout.readline().decode().strip()

    def alive(self) -> int:
        self.service.popen.stdin.write(b"status\n")
        self.service.popen.stdin.flush()
        line = self._read_line(timeout=30)
        m = re.match(r"alive=(\d+)", line)
        if not m:
            raise SetupError(f"{self.service.name}: unexpected {line!r}")
        return int(m.group(1))

    def close(self) -> None:
        # Closing stdin asks it to close every session and exit.
        self.service.popen.stdin.close()
        try:
            self.service.popen.wait(60)
        except subprocess.TimeoutExpired:
            pass
        self.service.stop()


# ---------------------------------------------------------------------------
# Results: table, CSV, chart
# ---------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    title: str
    path: str
    unit: str
    values: list[float]
    ratio_direct: Optional[float] = None
    ratio_haproxy: Optional[float] = None
    target: str = ""
    status: str = ""

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.values) if self.values else None


def evaluate(results: list[Result]) -> None:
    """Fills in ratios and target checks."""
    by_key = {(r.scenario, r.title, r.path): r for r in results}
    for r in results:
        direct = by_key.get((r.scenario, r.title, "direct"))
        haproxy = by_key.get((r.scenario, r.title, "haproxy"))
        if direct:
            r.ratio_direct = paired_ratio(r.values, direct.values)
        if haproxy and r.path != "direct":
            r.ratio_haproxy = paired_ratio(r.values, haproxy.values)
        if not r.path.startswith("pgsni"):
            continue
        checks: list[tuple[str, Optional[bool]]] = []
        if r.scenario == "S1":
            checks = [(">=0.85 direct", _ge(r.ratio_direct, 0.85)), (">=HAProxy", _ge(r.ratio_haproxy, 1.0))]
        elif r.scenario in ("S2", "S3"):
            checks = [(">=0.95 direct", _ge(r.ratio_direct, 0.95))]
        elif r.scenario == "S4":
            checks = [("<=HAProxy", None if r.ratio_haproxy is None else r.ratio_haproxy <= 1.0)]
        if checks:
            r.target = " & ".join(c for c, _ in checks)
            results_known = [ok for _, ok in checks]
            r.status = "n/a" if None in results_known else ("ok" if all(results_known) else "MISS")


def paired_ratio(values: list[float], baseline: list[float]) -> Optional[float]:
    """The median of the per-round ratios of `values` to `baseline`.

    Rounds are interleaved, so the paths of one round ran minutes apart at
    most, under the same background load; a ratio within a round cancels
    load that drifts between rounds, which a ratio of medians does not.
    When a round is missing (it failed, and the run says so), the rounds
    cannot be paired and the ratio of the medians is given instead.
    """
    if not values or not baseline:
        return None
    if len(values) == len(baseline) and all(baseline):
        return statistics.median(v / b for v, b in zip(values, baseline))
    base = statistics.median(baseline)
    return statistics.median(values) / base if base else None


def _ge(value: Optional[float], bound: float) -> Optional[bool]:
    return None if value is None else value >= bound


def fmt(value: Optional[float]) -> str:
    """A measurement, with about four significant digits."""
    if value is None:
        return "n/a"
    for bound, digits in ((1000, 0), (100, 1), (10, 2)):
        if abs(value) >= bound:
            return f"{value:.{digits}f}"
    return f"{value:.3f}"


def fmt_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(results: list[Result], rounds: int) -> str:
    header = ["scenario", "path", "median", "unit", "/direct", "/haproxy", "target", "status", "rounds"]
    rows = [header]
    last = None
    for r in results:
        label = f"{r.scenario} {r.title}" if (r.scenario, r.title) != last else ""
        last = (r.scenario, r.title)
        rows.append([
            label, r.path, fmt(r.median), r.unit,
            fmt_ratio(r.ratio_direct),
            "-" if r.path in ("direct", "haproxy") else fmt_ratio(r.ratio_haproxy),
            r.target, r.status, ", ".join(fmt(v) for v in r.values) or "none",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(results: list[Result], path: Path, rounds: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "metric", "path", "unit", "median", "ratio_to_direct", "ratio_to_haproxy",
                    "target", "status", *[f"round_{i}" for i in range(1, rounds + 1)]])
        for r in results:
            w.writerow([r.scenario, r.title, r.path, r.unit,
                        "" if r.median is None else f"{r.median:.6g}",
                        "" if r.ratio_direct is None else f"{r.ratio_direct:.4f}",
                        "" if r.ratio_haproxy is None else f"{r.ratio_haproxy:.4f}",
                        r.target, r.status, *[f"{v:.6g}" for v in r.values]])


def draw_chart(results: list[Result], out: Path, subtitle: str) -> Optional[Path]:
    """One PNG, two panels: throughput relative to direct (S1-S3, higher is
    better, with the targets), and cost relative to HAProxy (S4-S5, lower is
    better). Drawn with gnuplot."""
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no chart")
        return None
    proxies = []
    for r in results:
        if r.path != "direct" and r.path not in proxies:
            proxies.append(r.path)
    proxies.sort(key=lambda p: p == "haproxy")  # pgsni variants first, HAProxy last
    colours = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    colour = {p: ("#ff7f0e" if p == "haproxy" else colours[i % len(colours)]) for i, p in enumerate(proxies)}

    panels = [
        ("throughput relative to direct (higher is better)", "ratio to direct",
         [("S1", "", "S1 pgbench -S\\n-c 8 (tps)", 0.85), ("S2", "", "S2 pgbench -S -C\\n(tps)", 0.95),
          ("S3", "", "S3 COPY\\n(MB/s)", 0.95)], "ratio_direct"),
        ("cost relative to HAProxy (lower is better)", "ratio to HAProxy",
         [("S4", "handshake only", "S4 RSS per idle\\nsession", 1.0),
          ("S4", "echo", "S4 RSS per idle\\nsession, after echo", 1.0),
          ("S5", "GB", "S5 CPU per\\nforwarded GB", None),
          ("S5", "connection", "S5 CPU per\\nconnection", None)], "ratio_haproxy"),
    ]
    gp = [
        "set terminal pngcairo size 1400,620 font 'sans,11'",
        f"set output '{out / 'ratios.png'}'",
        "set multiplot layout 1,2 title \"pgsni benchmark: " + subtitle.replace('"', "'") + "\" font 'sans,12'",
        "set style fill solid 0.85 border -1",
        "set grid ytics",
        "set key below horizontal",
        "set yrange [0:*]",
        "set offsets 0, 0, graph 0.12, 0",
        "set bmargin 7",
    ]
    data = out / "chart.dat"
    blocks: list[str] = []
    block = 0
    width = 0.8 / max(1, len(proxies))
    for title, ylabel, groups, attr in panels:
        plots = []
        arrows = []
        xtics = []
        for gi, (_, _, label, target) in enumerate(groups):
            xtics.append(f'"{label}" {gi}')
            if target is not None:
                arrows.append(
                    f"set arrow from {gi - 0.45},{target} to {gi + 0.45},{target} nohead dt 2 lw 2 lc rgb 'red' front")
        any_data = False
        for pi, proxy in enumerate(proxies):
            lines = []
            for gi, (scenario, in_title, _, _) in enumerate(groups):
                r = next((r for r in results if r.scenario == scenario and r.path == proxy
                          and in_title in r.title), None)
                value = getattr(r, attr) if r else None
                if value is not None:
                    x = gi + (pi - (len(proxies) - 1) / 2) * width
                    lines.append(f"{x:.4f} {value:.4f} {width * 0.95:.4f}")
            if lines:
                any_data = True
                blocks.append("\n".join(lines))
                plots.append(f"'{data}' index {block} using 1:2:3 with boxes lc rgb '{colour[proxy]}' title '{proxy}'")
                plots.append(f"'{data}' index {block} using 1:2:(sprintf('%.2f',$2)) with labels offset 0,0.7 notitle")
                block += 1
        gp.append(f"set title '{title}'")
        gp.append(f"set ylabel '{ylabel}'")
        gp.append(f"set xtics ({', '.join(xtics)})")
        gp.append(f"set xrange [-0.6:{len(groups) - 0.4}]")
        gp.append("unset arrow")
        gp.extend(arrows)
        gp.append(f"set arrow from -0.6,1 to {len(groups) - 0.4},1 nohead lw 1 lc rgb 'black' back")
        if any_data:
            if arrows:
                plots.append("NaN with lines dt 2 lw 2 lc rgb 'red' title 'target'")
            gp.append("plot " + ", ".join(plots))
        else:
            gp.append("set label 1 'not measured' at graph 0.5, graph 0.5 center")
            gp.append("plot 1 lc rgb 'black' notitle")
            gp.append("unset label 1")
    gp.append("unset multiplot")
    data.write_text("\n\n\n".join(blocks) + "\n")
    script = out / "chart.gp"
    script.write_text("\n".join(gp) + "\n")
    result = run(["gnuplot", str(script)], timeout=60)
    if result.returncode != 0:
        log(f"gnuplot failed:\n{result.stdout}")
        return None
    return out / "ratios.png"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def find_pg_bindir() -> Path:
    """The PostgreSQL server binaries, found the way the tests find them."""
    candidates = [os.environ.get("PGSNI_PG_BINDIR"), "/usr/lib/postgresql/15/bin"]
    if shutil.which("pg_config"):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for c in candidates:
        if c and (Path(c) / "postgres").is_file() and (Path(c) / "pgbench").is_file():
            return Path(c)
    raise SetupError("PostgreSQL server binaries not found; run scripts/install-test-deps.sh or pass --pg-bindir")


def machine_summary(bench: Bench) -> list[str]:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    rev = version(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    a = bench.args
    return [
        f"machine: {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, "
        f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}",
        f"software: {version([str(bench.pg_bindir / 'postgres'), '--version'])}; "
        f"{version(['haproxy', '-v'])}; pgsni {rev}",
        f"settings: rounds {a.rounds}, pgbench {a.duration} s, COPY {a.bulk_mb} MB, "
        f"idle sessions {bench.idle_sessions}"
        + (f" ({a.idle} asked; the open-files limit {bench.fd_limit} allows no more)"
           if bench.idle_sessions < a.idle else "")
        + f", COPY rows of {a.row_bytes} bytes",
        *[f"variant {v.name}: {v.binary} serve ... {shlex.join(v.args)}".rstrip() for v in a.variants],
    ]


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_nofile()

    # SIGTERM and SIGHUP unwind like Ctrl-C does, through the clean-up below.
    # (SIGINT is set explicitly: run.sh starts the harness in the background,
    # where it would otherwise inherit SIGINT ignored.) If whoever started
    # the harness dies, the harness is told to stop too.
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    bench = Bench(args)
    need = set(args.only)
    if "S5" in need:
        need |= {"S2", "S3"}  # S5 is measured during those runs
    binaries = [v.binary for v in args.variants]
    if "S4" in need:
        binaries += [args.target_dir / "release" / "examples" / e for e in ("tls_tenant", "idle_clients")]
    missing = [str(b) for b in binaries if not os.access(b, os.X_OK)]
    if missing:
        print(f"missing binaries (build them first, e.g. via benches/pgbench/run.sh): {', '.join(missing)}", file=sys.stderr)
        return 2

    summary = machine_summary(bench)
    for line in summary:
        print(line)
    started = time.monotonic()
    try:
        bench.prepare_dirs()
        bench.make_certs()
        cpu_conn: dict[str, list[float]] = {}
        cpu_gb: dict[str, list[float]] = {}
        if need & {"S1", "S2", "S3"}:
            bench.start_postgres()
            bench.start_paths()
            bench.warm_up()
            if "S1" in need:
                bench.scenario_pgbench("S1", ["-c", "8", "-j", "2"], "pgbench -S -c 8 -j 2")
            if "S2" in need:
                cpu_conn = bench.scenario_pgbench("S2", ["-C", "-c", "4", "-j", "2"], "pgbench -S -C -c 4 -j 2")
            if "S3" in need:
                cpu_gb = bench.scenario_bulk()
            for path in bench.paths:
                if path.service:
                    path.service.stop()
            bench.postgres.stop()
        if "S4" in need:
            bench.scenario_idle()
        if "S5" in need:
            bench.add("S5", "proxy CPU per forwarded GB", "CPU s", cpu_gb)
            bench.add("S5", "proxy CPU per accepted connection", "CPU ms", cpu_conn)
    except SetupError as error:
        bench.failures.append(f"setup: {error}")
        print(f"\nerror: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except SystemExit:
        print("\nstopped by a signal: stopping everything", file=sys.stderr)
        raise
    finally:
        stop_all()
        if not args.keep_data:
            shutil.rmtree(bench.pg_base, ignore_errors=True)

    # Keep only what was asked for in the report (S5 may have run S2/S3).
    bench.results = [r for r in bench.results if r.scenario in args.only]
    evaluate(bench.results)
    text = table(bench.results, args.rounds)
    report = "\n".join(summary) + f"\nrun time: {(time.monotonic() - started) / 60:.1f} min\n\n" + text + "\n"
    misses = [f"{r.scenario} {r.title}, {r.path}: {r.target}" for r in bench.results if r.status == "MISS"]
    if misses:
        report += "\ntargets missed:\n" + "\n".join(f"  {m}" for m in misses) + "\n"
    if bench.failures:
        report += "\nFAILURES:\n" + "\n".join(f"  {f}" for f in bench.failures) + "\n"
    print("\n" + report)
    (args.out / "results.txt").write_text(report)
    write_csv(bench.results, args.out / "results.csv", args.rounds)
    subtitle = (f"{os.cpu_count()} CPUs, median of {args.rounds} round{'s' if args.rounds > 1 else ''}, "
                f"{time.strftime('%Y-%m-%d %H:%M')}")
    chart = draw_chart(bench.results, args.out, subtitle) if bench.results else None
    print(f"written: {args.out / 'results.csv'}, {args.out / 'results.txt'}" + (f", {chart}" if chart else ""))
    if bench.failures:
        return 1
    if misses and args.strict:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
