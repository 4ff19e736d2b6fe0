//! Keep-alive connections to a session's printer, reused across requests.
//! Each connection is one tunnel stream; the pool bounds how many a session
//! holds, since embedded web servers take only a few at a time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub type Sender = SendRequest<axum::body::Body>;

/// Idle connections kept per session.
const MAX_IDLE: usize = 8;

pub struct PrinterPool {
    idle: Mutex<Vec<Sender>>,
    permits: Arc<Semaphore>,
}

impl PrinterPool {
    pub fn new(max: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// An idle connection that is still open and ready, if any.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if s.is_ready() && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Returns a connection after its response was read to the end.
    pub fn put(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }

    /// Drops the idle connections (their tasks then end).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A slot for one more connection, waiting at most `wait`.
    pub async fn slot(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(|r| r.ok())
    }
}
