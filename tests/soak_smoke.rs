//! The soak's quick preset, end to end: `benches/soak/run.sh --quick` builds
//! the release binaries, starts a TLS PostgreSQL, the release pgsni, pgbench
//! and the hostile clients, and runs the four proofs at small sizes (500 idle
//! sessions, 100 stallers with a 3 s handshake timeout, a 10 s reload storm,
//! a 10 s garbage storm). The script must exit 0 and have printed a PASS line
//! for every check, and no FAIL line. Nothing is skipped: a missing
//! dependency fails the script, and so this test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every check the quick soak makes, as printed before the colon.
const CHECKS: &[&str] = &[
    "idle/opened",
    "idle/pgbench",
    "idle/held",
    "idle/broker",
    "stallers/pgbench",
    "stallers/throughput",
    "stallers/closed",
    "stallers/deadline",
    "stallers/answers",
    "stallers/alive",
    "reload/pgbench",
    "reload/pgbench-C",
    "reload/reloads",
    "reload/errors",
    "reload/last-version",
    "reload/alive",
    "garbage/alive",
    "garbage/pgbench",
    "garbage/pgbench-C",
    "garbage/closed",
    "garbage/accepted",
    "garbage/connections",
    "garbage/tasks",
    "garbage/fds",
];

/// Where cargo builds the tests (`$CARGO_TARGET_DIR`, or `target/`).
fn target_dir(repo: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo.join(dir),
        None => repo.join("target"),
    }
}

#[test]
fn quick_soak_passes_every_check() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let smoke = target_dir(repo).join("soak-smoke");
    let started = Instant::now();
    // The release binaries are built in a target directory of their own:
    // cargo keeps its target directory locked while the tests run, and a
    // build there would wait for this very test to end.
    let output = Command::new(repo.join("benches/soak/run.sh"))
        .arg("--quick")
        .arg("--target-dir")
        .arg(smoke.join("target"))
        .arg("--out")
        .arg(smoke.join("out"))
        .current_dir(repo)
        .stdin(Stdio::null())
        .output()
        .expect("run benches/soak/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    println!("quick soak: {:.0} s", started.elapsed().as_secs_f64());
    assert!(
        output.status.success(),
        "benches/soak/run.sh --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for check in CHECKS {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("PASS {check}:"))),
            "no PASS line for {check}:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        !stdout.lines().any(|line| line.starts_with("FAIL ")),
        "a check failed:\n{stdout}\n{stderr}"
    );
}
