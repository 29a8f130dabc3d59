//! The route timeout, counted as Envoy's router counts it: from the end of the request body.
//! The body records its end ([`EndMark`], dropped when the body ends, fails or is dropped);
//! the wait re-checks it whenever its timer fires, so no signal crosses between the two.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// When the request body ended, once it has.
#[derive(Clone, Default)]
pub(super) struct Ended(Arc<OnceLock<Instant>>);

impl Ended {
    /// The mark the body holds: the body's end is when it is dropped.
    pub(super) fn mark(&self) -> EndMark {
        EndMark(self.0.clone())
    }
}

/// Records the end of a request body when dropped.
pub(super) struct EndMark(Arc<OnceLock<Instant>>);

impl Drop for EndMark {
    fn drop(&mut self) {
        let _ = self.0.set(Instant::now());
    }
}

/// `response`'s output, or `None` when `timeout` passed after the request body's end first.
pub(super) async fn within<F: Future>(
    response: F,
    ended: &Ended,
    timeout: Duration,
) -> Option<F::Output> {
    tokio::pin!(response);
    loop {
        // Before the end, the deadline is at least a timeout away: look again then.
        let deadline = ended
            .0
            .get()
            .map_or_else(|| Instant::now() + timeout, |&end| end + timeout);
        tokio::select! {
            biased;
            r = &mut response => return Some(r),
            () = tokio::time::sleep_until(deadline) => {}
        }
        if ended
            .0
            .get()
            .is_some_and(|&end| end + timeout <= Instant::now())
        {
            return None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(40);

    #[tokio::test]
    async fn a_response_before_the_timeout_is_the_answer() {
        assert_eq!(
            within(async { 7 }, &Ended::default(), TIMEOUT).await,
            Some(7)
        );
    }

    /// The timeout does not run while the request body goes on, however long it takes.
    #[tokio::test]
    async fn no_timeout_before_the_request_body_ends() {
        let ended = Ended::default();
        let _body = ended.mark();
        let slow = async {
            tokio::time::sleep(TIMEOUT * 4).await;
            7
        };
        assert_eq!(within(slow, &ended, TIMEOUT).await, Some(7));
    }

    /// The timeout counts from the body's end (its mark dropped), not from the wait's start.
    #[tokio::test]
    async fn the_timeout_counts_from_the_end_of_the_request_body() {
        let ended = Ended::default();
        let mark = ended.mark();
        let start = Instant::now();
        let body = tokio::spawn(async move {
            tokio::time::sleep(TIMEOUT * 3).await;
            drop(mark);
        });
        let never = std::future::pending::<()>();
        assert_eq!(within(never, &ended, TIMEOUT).await, None);
        body.await.unwrap();
        let end = *ended.0.get().unwrap();
        assert!(end >= start + TIMEOUT * 3);
        assert!(Instant::now() >= end + TIMEOUT);
    }
}
