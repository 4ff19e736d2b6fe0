//! The relay's own check, made before it even asks an agent to open a
//! connection. It is deliberately coarse: the agent's [`crate::AgentPolicy`]
//! remains the final authority; this only keeps the relay from asking for
//! things the agent would refuse anyway (or that the user has no business
//! asking for).

use serde::{Deserialize, Serialize};

/// What the relay knows when a user asks to open a device port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayCheck<'a> {
    /// Whether the device is registered to (belongs to) the agent asked.
    pub device_registered: bool,
    /// The TCP port requested.
    pub port: u16,
    /// The ports that agent reported as allowed by its policy.
    pub agent_ports: &'a [u16],
}

/// The relay's verdict with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayDecision {
    /// Whether the relay may forward the request to the agent.
    pub allowed: bool,
    /// One line, starting with `allowed:` or `denied:`.
    pub reason: String,
}

/// Allowed only if the device belongs to the agent and the port is one of
/// the agent's ports. Port 0 is never allowed.
pub fn relay_decide(c: &RelayCheck) -> RelayDecision {
    if !c.device_registered {
        return RelayDecision {
            allowed: false,
            reason: "denied: the device is not registered to this agent".to_string(),
        };
    }
    let mut ports = c.agent_ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    if c.port == 0 || !ports.contains(&c.port) {
        return RelayDecision {
            allowed: false,
            reason: format!(
                "denied: port {} is not in the agent's allowed ports {ports:?}",
                c.port
            ),
        };
    }
    RelayDecision {
        allowed: true,
        reason: format!(
            "allowed: the device is registered to this agent and port {} is in the agent's allowed ports",
            c.port
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: [u16; 5] = [80, 443, 8000, 9100, 631];

    #[test]
    fn registered_device_on_agent_port_is_allowed() {
        for port in PORTS {
            let d = relay_decide(&RelayCheck {
                device_registered: true,
                port,
                agent_ports: &PORTS,
            });
            assert!(d.allowed, "{port}: {}", d.reason);
            assert!(d.reason.starts_with("allowed:"));
            assert!(d.reason.contains(&format!("port {port}")));
        }
    }

    #[test]
    fn unregistered_device_is_denied_even_on_good_port() {
        let d = relay_decide(&RelayCheck {
            device_registered: false,
            port: 80,
            agent_ports: &PORTS,
        });
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            "denied: the device is not registered to this agent"
        );
    }

    #[test]
    fn port_outside_agent_ports_is_denied() {
        for port in [
            0, 1, 22, 79, 81, 442, 444, 630, 632, 7999, 8001, 9099, 9101, 65535,
        ] {
            let d = relay_decide(&RelayCheck {
                device_registered: true,
                port,
                agent_ports: &PORTS,
            });
            assert!(!d.allowed, "{port}");
            assert_eq!(
                d.reason,
                format!("denied: port {port} is not in the agent's allowed ports [80, 443, 631, 8000, 9100]")
            );
        }
    }

    #[test]
    fn empty_agent_ports_denies_everything() {
        let d = relay_decide(&RelayCheck {
            device_registered: true,
            port: 80,
            agent_ports: &[],
        });
        assert!(!d.allowed);
        assert!(d.reason.contains("port 80"));
    }

    #[test]
    fn port_zero_denied_even_if_listed() {
        let d = relay_decide(&RelayCheck {
            device_registered: true,
            port: 0,
            agent_ports: &[0, 80],
        });
        assert!(!d.allowed);
    }

    #[test]
    fn custom_agent_port_is_allowed() {
        let d = relay_decide(&RelayCheck {
            device_registered: true,
            port: 8443,
            agent_ports: &[80, 8443],
        });
        assert!(d.allowed);
    }

    #[test]
    fn decision_round_trips_through_json() {
        let d = relay_decide(&RelayCheck {
            device_registered: true,
            port: 22,
            agent_ports: &PORTS,
        });
        let s = serde_json::to_string(&d).unwrap();
        let back: RelayDecision = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }
}
