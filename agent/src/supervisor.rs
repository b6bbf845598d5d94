//! The task supervisor: every long-running task of the agent is spawned here, and every
//! one of them stops when the shared cancellation token fires.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Owns the agent's tasks. Each task receives a child token and must return soon after
/// it is cancelled; [`Supervisor::shutdown`] waits for them under a deadline.
pub struct Supervisor {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// How a shutdown ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Every task returned in time.
    Clean,
    /// The grace period ran out with this many tasks still running; they were abandoned.
    TimedOut { remaining: usize },
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// The token that stops everything; a task that fails fatally may cancel it too.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a named task. An error it returns is logged with all its causes and stops
    /// the whole agent: a half-running agent would promise what it no longer does.
    pub fn spawn<F, Fut, E>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::error::Error + 'static,
    {
        let stop = self.token.clone();
        let fut = task(self.token.child_token());
        self.tracker.spawn(async move {
            match fut.await {
                Ok(()) => tracing::debug!(task = name, "Task finished"),
                Err(error) => {
                    let error = crate::error_chain(&error);
                    tracing::error!(task = name, %error, "Task failed; stopping the agent");
                    stop.cancel();
                }
            }
        });
    }

    /// Cancels every task and waits up to `grace` for them to return.
    pub async fn shutdown(self, grace: Duration) -> Shutdown {
        self.token.cancel();
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => Shutdown::Clean,
            Err(_) => Shutdown::TimedOut {
                remaining: self.tracker.len(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cancelled_tasks_stop_within_grace() {
        let sup = Supervisor::new();
        for _ in 0..3 {
            sup.spawn("waiter", |token| async move {
                token.cancelled().await;
                Ok::<(), std::io::Error>(())
            });
        }
        assert_eq!(sup.shutdown(Duration::from_secs(5)).await, Shutdown::Clean);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_task_is_reported_not_waited_for_forever() {
        let sup = Supervisor::new();
        sup.spawn("stuck", |_token| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), std::io::Error>(())
        });
        assert_eq!(
            sup.shutdown(Duration::from_secs(5)).await,
            Shutdown::TimedOut { remaining: 1 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_stops_the_others() {
        let sup = Supervisor::new();
        let token = sup.token();
        sup.spawn("fails", |_token| async move {
            Err::<(), _>(std::io::Error::other("boom"))
        });
        tokio::time::timeout(Duration::from_secs(1), token.cancelled())
            .await
            .expect("the failure must cancel the shared token");
    }
}
