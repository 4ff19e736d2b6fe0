//! The crate-boundary error type.

use ipnetwork::IpNetworkError;

/// Errors from validating policy configuration. Each names the config key
/// (and index, for lists) so an operator can find the offending line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A `policy.allow` or `policy.deny` entry is not a CIDR or a single IP.
    #[error("{key}: invalid network \"{value}\": {source}")]
    InvalidNetwork {
        /// The key with its index, e.g. `policy.allow[2]`.
        key: String,
        /// The entry as written.
        value: String,
        /// Why it did not parse.
        #[source]
        source: IpNetworkError,
    },
    /// A `policy.ports` entry is not a usable TCP port (port 0).
    #[error("{key}: port {port} is not a valid port")]
    InvalidPort {
        /// The key with its index, e.g. `policy.ports[1]`.
        key: String,
        /// The value as written.
        port: u16,
    },
    /// `policy.ports` is present but empty, which would refuse every connection.
    #[error("policy.ports: the list is empty; at least one port is required")]
    EmptyPorts,
}
