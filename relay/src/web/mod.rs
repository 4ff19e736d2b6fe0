//! Web sessions: the pure rewriting logic of the proxy from a session's public
//! host (`https://s-<random>.<domain>`) to a printer's embedded web server.
//!
//! - [`rewrite`]: request and response headers, URL matching, the body plan.
//! - [`body`]: streaming body rewriting (decoding gzip/deflate/br on the way).
//!
//! No sockets here: the proxy calls [`rewrite::Rewriter`] on each request's and
//! response's headers and wraps bodies with [`body::rewrite_body`].

pub mod body;
pub mod rewrite;
