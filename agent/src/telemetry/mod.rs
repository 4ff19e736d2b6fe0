//! Printer telemetry: from an SNMP walk to a [`dwa_proto::telemetry::DeviceRecord`].
//!
//! - [`snmprec`] (re-exported from `dwa_proto`): the `OID|type|value` walk
//!   format and the ordered [`Walk`].
//! - [`decode`]: pure decoding of a walk (standard MIBs first, vendor MIBs as
//!   fallback); every field that cannot be decoded becomes a `FieldError`.
//! - [`snmp`]: the v1/v2c/v3 client (timeouts, retries, bounded walks).
//! - [`v3`]: SNMPv3 credentials and the reasons an agent refuses them.
//! - [`scan`]: the one-shot scan of address ranges.
//! - [`spool`]: readings on disk (SQLite) until the relay acknowledges them.
//! - [`upload`]: signed, batched, idempotent uploads with backoff.
//! - [`names`], [`netbios`]: host-name targets, PTR and NetBIOS names.
//! - [`traps`]: printer alert traps trigger an immediate scan.
//! - [`collector`]: the schedule of `run`, scan-now, relay-pushed settings
//!   within the local ceiling.

pub mod collector;
pub mod decode;
pub mod discover;
pub mod names;
pub mod netbios;
pub mod scan;
pub mod snmp;
pub mod spool;
mod text;
pub mod traps;
pub mod upload;
pub mod v3;

pub use decode::decode;
/// The walk format lives in `dwa_proto` (pure; the fleet simulator reads it too).
pub use dwa_proto::snmprec;
pub use snmprec::{Oid, ParseError, Value, Walk};
