#!/usr/bin/env python3
"""psycopg 3 (with the libpq bundled by its binary wheel) through pgsni.

Run by tests/client_matrix.rs, one process per group of checks:

    psycopg_matrix.py --host NAME --port PORT --ca CA.pem --cluster EXPECTED
                      [--negotiation postgres|direct] CHECK...

Every connection dials 127.0.0.1 while naming NAME (libpq's `host` +
`hostaddr`), with `sslmode=verify-full` against CA.pem and the password from
$PGPASSWORD. Prints one `ok CHECK: ...` line per passed check; on the first
failure prints `FAIL CHECK: reason` to stderr and exits 1.

Checks:
  query            the session lands on the cluster named EXPECTED, over TLS
  transaction      a rolled-back and a committed transaction
  copy             COPY TO STDOUT and COPY FROM STDIN of a few MB, byte-exact
  cancel-safe      conn.cancel_safe() (libpq 17+ PQcancelCreate: an encrypted
                   cancel carrying SNI) stops a running pg_sleep(30)
  cancel-legacy    conn.cancel() (PQcancel: a plaintext CancelRequest) does too
  refused-no-alpn  the connection must FAIL: libpq >= 17 with direct TLS
                   insists on ALPN, which a PostgreSQL 15 server never
                   negotiates; prints the error libpq reports
"""

import argparse
import sys
import threading
import time

import psycopg
from psycopg import errors, pq

# The COPY payload: the same rows tests/client_matrix.rs generates, and the
# same query producing them server side. About 4 MB of text.
COPY_ROWS = 40_000
COPY_QUERY = (
    "COPY (SELECT g, repeat(chr(65 + g % 26), 90) || g "
    f"FROM generate_series(1, {COPY_ROWS}) g) TO STDOUT"
)
# Row by row, the table must hold exactly what the generator produces.
COPY_VERIFY = (
    "SELECT count(*), sum(g), bool_and(t = repeat(chr(65 + g % 26), 90) || g) "
    "FROM matrix_copy"
)

# How long a cancelled pg_sleep(30) may still take to return. Generous for a
# loaded machine, far below the 30 s an ignored cancel would leave.
CANCEL_DEADLINE = 5.0


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def copy_payload():
    return "".join(
        f"{g}\t{chr(65 + g % 26) * 90}{g}\n" for g in range(1, COPY_ROWS + 1)
    ).encode()


class Matrix:
    def __init__(self, args):
        self.args = args

    def conninfo(self):
        return psycopg.conninfo.make_conninfo(
            host=self.args.host,
            hostaddr="127.0.0.1",
            port=self.args.port,
            user="postgres",
            dbname="postgres",
            sslmode="verify-full",
            sslrootcert=self.args.ca,
            sslnegotiation=self.args.negotiation,
            connect_timeout=10,
        )

    def connect(self):
        return psycopg.connect(self.conninfo(), autocommit=True)

    def check_query(self):
        with self.connect() as conn:
            cluster, port, ssl, version = conn.execute(
                "SELECT current_setting('cluster_name'), inet_server_port(), ssl, "
                "current_setting('server_version_num')::int "
                "FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            expect(cluster == self.args.cluster, f"reached {cluster!r}")
            expect(ssl, "pg_stat_ssl says the session is not encrypted")
            expect(conn.pgconn.ssl_in_use, "libpq says the session is not encrypted")
            return f"cluster {cluster} (port {port}, server {version}), TLS"

    def check_transaction(self):
        with self.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS matrix_tx")
            conn.execute("CREATE TABLE matrix_tx (v text)")
            with conn.transaction():
                conn.execute("INSERT INTO matrix_tx VALUES ('rolled back')")
                status = conn.info.transaction_status
                expect(status == pq.TransactionStatus.INTRANS, f"status {status!r}")
                # Leaves the block quietly, rolling the transaction back.
                raise psycopg.Rollback()
            with conn.transaction():
                conn.execute("INSERT INTO matrix_tx VALUES ('committed')")
        # A new session sees only the committed row.
        with self.connect() as conn:
            rows = conn.execute("SELECT v FROM matrix_tx").fetchall()
            expect(rows == [("committed",)], f"table holds {rows!r}")
        return "rollback discarded, commit visible to a new session"

    def check_copy(self):
        payload = copy_payload()
        with self.connect() as conn, conn.cursor() as cur:
            received = bytearray()
            with cur.copy(COPY_QUERY) as copy:
                for chunk in copy:
                    received += chunk
            expect(
                received == payload,
                f"COPY TO STDOUT: {len(received)} bytes differ from the "
                f"{len(payload)} expected",
            )

            cur.execute("DROP TABLE IF EXISTS matrix_copy")
            cur.execute("CREATE TABLE matrix_copy (g int, t text)")
            with cur.copy("COPY matrix_copy (g, t) FROM STDIN") as copy:
                step = 64 * 1024
                for at in range(0, len(payload), step):
                    copy.write(payload[at : at + step])
            count, total, rows_ok = cur.execute(COPY_VERIFY).fetchone()
            expected = (COPY_ROWS, COPY_ROWS * (COPY_ROWS + 1) // 2, True)
            expect(
                (count, total, rows_ok) == expected,
                f"COPY FROM STDIN: server has {(count, total, rows_ok)}, "
                f"expected {expected}",
            )
        return f"{len(payload)} bytes out and in, byte-exact"

    def cancel_running_sleep(self, cancel):
        """Runs pg_sleep(30) and calls `cancel(conn)` from another thread once
        the server shows the statement running; returns the seconds the
        statement took."""
        with self.connect() as conn, self.connect() as monitor:
            pid = conn.info.backend_pid
            failure = []

            def canceller():
                try:
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline:
                        row = monitor.execute(
                            "SELECT 1 FROM pg_stat_activity WHERE pid = %s "
                            "AND state = 'active' AND query LIKE 'SELECT pg_sleep(30)%%'",
                            (pid,),
                        ).fetchone()
                        if row:
                            cancel(conn)
                            return
                        time.sleep(0.02)
                    failure.append("pg_sleep(30) never showed up as running")
                except Exception as exc:  # reported by the main thread
                    failure.append(f"{type(exc).__name__}: {exc}")

            thread = threading.Thread(target=canceller)
            thread.start()
            started = time.monotonic()
            try:
                conn.execute("SELECT pg_sleep(30)")
                took = time.monotonic() - started
                thread.join()
                raise CheckFailed(
                    f"pg_sleep(30) was not cancelled (took {took:.1f} s; "
                    f"canceller: {failure or 'sent'})"
                )
            except errors.QueryCanceled as exc:
                took = time.monotonic() - started
                thread.join()
                expect(
                    "canceling statement due to user request" in str(exc),
                    f"unexpected message {exc}",
                )
            expect(not failure, f"canceller failed: {failure}")
            expect(took < CANCEL_DEADLINE, f"the cancel took {took:.1f} s")
            # The session itself survives a cancel.
            expect(conn.execute("SELECT 1").fetchone() == (1,), "session unusable")
            expect(
                conn.execute("SELECT current_setting('cluster_name')").fetchone()[0]
                == self.args.cluster,
                "cancelled on the wrong cluster",
            )
            return took

    def check_cancel_safe(self):
        expect(
            psycopg.capabilities.has_cancel_safe(),
            f"this libpq ({pq.version()}) has no PQcancelCreate; need 17+",
        )
        took = self.cancel_running_sleep(lambda conn: conn.cancel_safe(timeout=10))
        return f"pg_sleep(30) cancelled after {took:.2f} s"

    def check_cancel_legacy(self):
        took = self.cancel_running_sleep(lambda conn: conn.cancel())
        return f"pg_sleep(30) cancelled after {took:.2f} s"

    def check_refused_no_alpn(self):
        try:
            conn = self.connect()
        except psycopg.OperationalError as exc:
            message = " ".join(str(exc).split())
            expect("ALPN" in message, f"failed, but not for ALPN: {message}")
            return f"refused by libpq: {message}"
        conn.close()
        raise CheckFailed("connected, but libpq should insist on ALPN")


CHECKS = {
    "query": Matrix.check_query,
    "transaction": Matrix.check_transaction,
    "copy": Matrix.check_copy,
    "cancel-safe": Matrix.check_cancel_safe,
    "cancel-legacy": Matrix.check_cancel_legacy,
    "refused-no-alpn": Matrix.check_refused_no_alpn,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="tenant server name")
    parser.add_argument("--port", required=True, type=int, help="pgsni's port")
    parser.add_argument("--ca", required=True, help="CA certificate (PEM)")
    parser.add_argument("--cluster", required=True, help="expected cluster_name")
    parser.add_argument(
        "--negotiation", choices=["postgres", "direct"], default="postgres"
    )
    parser.add_argument("checks", nargs="+", choices=sorted(CHECKS))
    args = parser.parse_args()

    print(
        f"psycopg {psycopg.__version__} ({pq.__impl__}), libpq {pq.version()}, "
        f"sslnegotiation={args.negotiation}",
        flush=True,
    )
    if args.negotiation == "direct" and pq.version() < 170000:
        print(f"FAIL setup: libpq {pq.version()} cannot do direct TLS", file=sys.stderr)
        return 1
    matrix = Matrix(args)
    for name in args.checks:
        try:
            detail = CHECKS[name](matrix)
        except (CheckFailed, psycopg.Error) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            print(f"FAIL {name}: {reason}", file=sys.stderr, flush=True)
            return 1
        print(f"ok {name}: {detail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
