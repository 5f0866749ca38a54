//! Requests in flight, counted so that a replica shutting down knows when it has finished what
//! it took on. While it drains it keeps accepting: a client that reaches it then is answered
//! (503 `shutting-down` for an acquire, the lock for a release) rather than refused a
//! connection, and the requests in flight end as they would have.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tokio::sync::Notify;

/// How many requests this replica is answering now.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    /// Woken whenever the count falls to zero.
    idle: Notify,
}

impl InFlight {
    /// Completes once no request is in flight (at once if none is).
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a fall to zero in between is not missed.
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// `app`, counting its requests in flight into `in_flight`.
pub fn counted(app: Router, in_flight: Arc<InFlight>) -> Router {
    app.layer(middleware::from_fn_with_state(in_flight, count))
}

async fn count(State(in_flight): State<Arc<InFlight>>, request: Request, next: Next) -> Response {
    /// Counts the request out however it ends, also when its future is dropped (a client gone).
    struct Guard(Arc<InFlight>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.0.idle.notify_waiters();
            }
        }
    }
    in_flight.count.fetch_add(1, Ordering::SeqCst);
    let _guard = Guard(in_flight);
    next.run(request).await
}
