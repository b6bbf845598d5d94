//! Waiting with deadlines instead of sleeps.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Ok`, and panics with its last error if
/// `deadline` passes first. Returns the `Ok` value.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= deadline => {
                panic!("{what}: not true within {deadline:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
