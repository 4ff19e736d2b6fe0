//! Printer telemetry: from an SNMP walk to a [`dwa_proto::telemetry::DeviceRecord`].
//!
//! - [`snmprec`]: the `OID|type|value` walk format and the ordered [`Walk`].
//! - [`decode`]: pure decoding of a walk (standard MIBs first, vendor MIBs as
//!   fallback); every field that cannot be decoded becomes a `FieldError`.
//!
//! No network I/O here: the SNMP client feeds a [`Walk`] later.

pub mod decode;
pub mod scan;
pub mod snmp;
pub mod snmprec;
mod text;

pub use decode::decode;
pub use snmprec::{Oid, ParseError, Value, Walk};
