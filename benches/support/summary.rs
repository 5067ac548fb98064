//! The summary printed after a bench binary's criterion groups: the medians
//! criterion measured, and ratios between benchmarks measured in interleaved
//! rounds.
//!
//! Criterion measures one benchmark after another, so on a shared machine a
//! burst of load can land on one contender and not the next, and the ratio of
//! two medians moves with it. [`paired`] instead runs the contenders in turn,
//! round after round, and takes the median of each round's ratio: whatever
//! the load does, it does to all of them alike.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Criterion as the bench binaries run it: short runs, since their numbers
/// are stable well within them and the benches share their machine.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
        .configure_from_args()
}

/// The medians criterion wrote during this run of the bench binary.
///
/// Criterion keeps each benchmark's estimates in
/// `<criterion dir>/<group>/<function>/<parameter>/new/estimates.json`; only
/// files written since [`Medians::start`] count, so a filtered run never
/// shows stale numbers.
pub struct Medians {
    since: SystemTime,
}

impl Medians {
    /// Call before running the benchmarks.
    pub fn start() -> Self {
        Self {
            since: SystemTime::now(),
        }
    }

    /// The median time of `group/function/parameter` in nanoseconds, if it
    /// was measured in this run.
    pub fn get(&self, group: &str, function: &str, parameter: &str) -> Option<f64> {
        let path = criterion_dir()?
            .join(group)
            .join(function)
            .join(parameter)
            .join("new/estimates.json");
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        if modified < self.since {
            return None;
        }
        let estimates: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        estimates["median"]["point_estimate"].as_f64()
    }
}

/// Where criterion writes: `$CRITERION_HOME`, else `criterion` in the Cargo
/// target directory, which holds this very executable.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(Path::new(&target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join("criterion"))
        .find(|dir| dir.is_dir())
}

/// Whether criterion is measuring (`cargo bench`), rather than running each
/// benchmark once (`cargo test --benches`, `--test`) or listing them.
pub fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
        && !std::env::args().any(|arg| arg == "--test" || arg == "--list")
}

/// Runs each of `contenders` for about `batch` at a time, in turn, for
/// `rounds` rounds, and returns for each the median time per call in
/// nanoseconds and the median over rounds of its time relative to the first
/// contender's in the same round.
pub fn paired(
    contenders: &mut [&mut dyn FnMut()],
    rounds: usize,
    batch: Duration,
) -> Vec<(f64, f64)> {
    let calls: Vec<u32> = contenders
        .iter_mut()
        .map(|contender| calls_filling(contender, batch))
        .collect();
    let mut per_call = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds {
        for ((contender, &calls), times) in contenders.iter_mut().zip(&calls).zip(&mut per_call) {
            times.push(time(contender, calls).as_nanos() as f64 / f64::from(calls));
        }
    }
    per_call
        .iter()
        .map(|times| {
            let ratios: Vec<f64> = times
                .iter()
                .zip(&per_call[0])
                .map(|(t, first)| t / first)
                .collect();
            (median(times.clone()), median(ratios))
        })
        .collect()
}

/// How many calls of `f` take about `batch`.
fn calls_filling(f: &mut dyn FnMut(), batch: Duration) -> u32 {
    let mut calls = 1;
    loop {
        let took = time(f, calls);
        if took >= batch / 8 || calls >= 1 << 24 {
            let scale = batch.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return (f64::from(calls) * scale).clamp(1.0, f64::from(1 << 24)) as u32;
        }
        calls *= 2;
    }
}

fn time(f: &mut dyn FnMut(), calls: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    black_box(start.elapsed())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A duration in nanoseconds, in the unit that suits it.
pub fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{:.2} ms", ns / 1e6),
    }
}

/// A median, or `–` if it was not measured.
pub fn cell(ns: Option<f64>) -> String {
    ns.map_or_else(|| "–".into(), format_ns)
}
