//! Waiting with deadlines instead of sleeps.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Ok`, and panics with its last error if
/// `deadline` passes first. Returns the `Ok` value.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    check: impl FnMut() -> Result<T, String>,
) -> T {
    within(deadline, check)
        .unwrap_or_else(|last| panic!("{what}: not true within {deadline:?}; last: {last}"))
}

/// Polls `check` every 50 ms until it returns `Ok`; its last error once `deadline`
/// passes first.
pub fn within<T>(
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(last) if start.elapsed() >= deadline => return Err(last),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
