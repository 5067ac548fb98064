//! The `pgsni` binary; see the library for how it works.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pgsni::cli::main()
}
