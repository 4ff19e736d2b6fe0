//! Device Web Access: a printer's web page through the relay, on a host of
//! its own per session.
//!
//! - [`pool`]: keep-alive connections to the printer, per session.
//! - [`proxy`]: the session host — requests carried to the printer.
//! - [`rewrite`]: headers and URLs rewritten between printer and session.
//! - [`body`]: streaming body rewriting (HTML, CSS, JavaScript; compressed).

pub mod body;
pub mod pool;
pub mod proxy;
pub mod rewrite;
