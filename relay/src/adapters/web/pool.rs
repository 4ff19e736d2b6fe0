//! Keep-alive connections to a session's printer, reused across requests.
//! Each connection is one tunnel stream; the pool bounds how many a session
//! holds, since embedded web servers take only a few at a time.

use std::sync::{Arc, Mutex};

use hyper::client::conn::http1::SendRequest;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub type Sender = SendRequest<axum::body::Body>;

pub struct PrinterPool {
    idle: Mutex<Vec<Sender>>,
    /// One per open connection (idle or busy).
    permits: Arc<Semaphore>,
    /// A connection went back to the idle list.
    returned: Notify,
    max: usize,
}

/// What a request waiting for a connection got.
pub enum Wait {
    /// A slot for a new connection.
    Slot(OwnedSemaphorePermit),
    /// An idle connection may be there now: take again.
    Returned,
}

impl PrinterPool {
    pub fn new(max: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max)),
            returned: Notify::new(),
            max,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection that is still open (it may need a moment to be
    /// ready: its last response was just read).
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle();
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Returns a connection whose response was read to the end.
    pub fn put(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max {
            idle.push(s);
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// Drops the idle connections (their tasks then end).
    pub fn clear(&self) {
        self.idle().clear();
    }

    /// A slot for a new connection, if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits for a free slot or a returned connection, whichever comes first.
    pub async fn wait(&self) -> Wait {
        tokio::select! {
            p = self.permits.clone().acquire_owned() => match p {
                Ok(p) => Wait::Slot(p),
                Err(_) => Wait::Returned,
            },
            _ = self.returned.notified() => Wait::Returned,
        }
    }
}
