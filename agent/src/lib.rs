//! The parts that run on one orch host: the sync engine ([`sync`]: planner, sender,
//! confined receiver), database replication checks ([`db`]), peer RPC over the tunnel
//! ([`peer`]), the local control socket ([`control`]), the SQLite state store ([`state`])
//! and the task supervisor ([`supervisor`]). They know nothing of the config file: the
//! `orchestrator` crate builds them from it and makes the cluster's decisions.

pub mod control;
pub mod db;
pub mod peer;
pub mod sdnotify;
pub mod state;
pub mod supervisor;
pub mod sync;

/// Milliseconds since the Unix epoch: the one clock the state store records in.
pub fn unix_millis(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// How long a text from the peer may be where it is shown or logged (a refusal, a
/// failure reason): longer ones are cut.
pub const PEER_TEXT: usize = 600;

/// A text from the peer (another person's machine) made inert for a terminal, a log, a
/// mail subject or an HTTP header: control characters (escape sequences, line breaks)
/// shown escaped instead of obeyed, and at most `max` bytes kept (cut at a character,
/// marked with `…`).
pub fn inert(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + piece.len() > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// An error with all its causes, `outer: inner: innermost`, for log fields (`tracing`
/// shows only the outer message of a `%error`).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod inert_tests {
    use super::inert;

    #[test]
    fn a_peer_text_is_shown_not_obeyed_and_cut() {
        assert_eq!(inert("plain words", 100), "plain words");
        assert_eq!(inert("a\u{1b}[2J\r\nb", 100), "a\\u{1b}[2J\\r\\nb");
        let cut = inert(&"é".repeat(100), 11);
        assert_eq!(cut, format!("{}…", "é".repeat(5)));
        // An escape is never cut in half.
        assert_eq!(inert("ab\u{7}", 4), "ab…");
    }
}

/// The heap held by a long-running agent, kept close to what it uses: glibc's allocator
/// makes an arena per thread that allocates (pushes run on pool threads, so a big push's
/// memory ends up spread over several) and keeps freed pages. Two arenas at most (set once
/// at start), and after each big piece of work the freed pages go back to the system.
pub mod memory {
    /// At most two malloc arenas, and every block of 4 MiB or more mapped on its own
    /// (call once, before threads start allocating much). A push's big vectors (a listing
    /// of 200 000 entries is 25 MB) then go back to the system when freed and grow by
    /// `mremap` instead of a copy beside the old block; without a fixed threshold glibc
    /// raises it to 32 MiB after the first such free, and they stay in the heap. Below
    /// 4 MiB stay the buffers of each frame (2 MiB at most): mapping and unmapping one a
    /// frame cost the sender of an initial copy 70% more CPU at 1 MiB.
    pub fn limit_arenas() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes the allocator's tuning; M_ARENA_MAX with a small
        // positive value and M_MMAP_THRESHOLD below its maximum are documented
        // (mallopt(3)) and cannot fail unsafely.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }

    /// Gives the heap's free pages back to the system (after a push of a big tree).
    pub fn release() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim walks the allocator's own free lists under its locks; it is
        // safe to call from any thread at any time (malloc_trim(3)).
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
