//! The command line: `pgsni check`, start-up failures, and help.

use std::process::{Command, Output};

fn pgsni(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgsni"))
        .args(args)
        .output()
        .expect("run pgsni")
}

#[test]
fn check_accepts_the_example_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/routes.toml");
    let out = pgsni(&["check", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 3 routes"));
}

#[test]
fn check_refuses_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        "[[route]]\nserver_name = \"a.example.com\"\nbackends = [\"127.0.0.1:1\"]\n\n\
         [[route]]\nserver_name = \"b.example.com\"\nbackends = [\"b.internal\"]\n",
    )
    .unwrap();
    let out = pgsni(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:7: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("host:port"), "{stderr}");
}

#[test]
fn serve_refuses_to_start_on_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        "[[route]]\nserver_name = \"*.*.example.com\"\nbackends = [\"x:1\"]\n",
    )
    .unwrap();
    let out = pgsni(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--routes",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes.toml:2:"), "{stderr}");
}

#[test]
fn help_describes_each_command() {
    for args in [&["--help"][..], &["serve", "--help"], &["check", "--help"]] {
        let out = pgsni(args);
        assert!(out.status.success());
        assert!(!out.stdout.is_empty());
    }
    let serve = String::from_utf8(pgsni(&["serve", "--help"]).stdout).unwrap();
    for flag in [
        "--listen",
        "--routes",
        "--metrics-listen",
        "--handshake-timeout",
        "--connect-timeout",
        "--log-format",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
}
