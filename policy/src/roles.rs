//! Who may do what, for which customer. Pure: the caller passes the user's
//! role and customer scope, and the customer an action touches.
//!
//! Roles (the accounts issue adds more checks, not more shapes):
//! - `admin`: everything, every customer.
//! - `technician`: telemetry, web sessions, raw tunnels and diagnostics for
//!   the customers assigned to them.
//! - `viewer`: telemetry and reports for the customers assigned.
//! - `customer`: their own customer's devices, read-only, and their own
//!   audit trail.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Technician,
    Viewer,
    Customer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Technician, Role::Viewer, Role::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Technician => "technician",
            Role::Viewer => "viewer",
            Role::Customer => "customer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (admin, technician, viewer, customer)"))
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Device inventory, readings, reports.
    ViewTelemetry,
    /// Open (or end) a web session to a device's web page.
    WebSession,
    /// A raw TCP tunnel (9100, 631...).
    RawTunnel,
    /// Ping, TCP, HTTP, IPP and PJL probes.
    Diagnostics,
    /// Customers, users, agents, devices, tokens; the whole audit log.
    Administer,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::ViewTelemetry => "view telemetry",
            Action::WebSession => "open web sessions",
            Action::RawTunnel => "open raw tunnels",
            Action::Diagnostics => "run diagnostics",
            Action::Administer => "administer the relay",
        }
    }
}

/// The customers a user is assigned to (ids).
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    pub customers: &'a [i64],
}

/// A verdict with the reason shown to the user (403 body) and audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub allowed: bool,
    pub reason: String,
}

/// May `role` with `scope` do `action` on something of `customer` (None:
/// not tied to a customer, e.g. listing users)?
pub fn permit(role: Role, scope: &Scope<'_>, action: Action, customer: Option<i64>) -> Permission {
    let role_allows = match role {
        Role::Admin => true,
        Role::Technician => matches!(
            action,
            Action::ViewTelemetry | Action::WebSession | Action::RawTunnel | Action::Diagnostics
        ),
        Role::Viewer | Role::Customer => action == Action::ViewTelemetry,
    };
    if !role_allows {
        return Permission {
            allowed: false,
            reason: format!("the {role} role may not {}", action.name()),
        };
    }
    if role == Role::Admin {
        return Permission {
            allowed: true,
            reason: "admin".into(),
        };
    }
    match customer {
        Some(c) if scope.customers.contains(&c) => Permission {
            allowed: true,
            reason: format!("{role} assigned to customer {c}"),
        },
        Some(c) => Permission {
            allowed: false,
            reason: format!("not assigned to customer {c}"),
        },
        None => Permission {
            allowed: false,
            reason: format!(
                "the {role} role may {} only for its customers",
                action.name()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS: [Action; 5] = [
        Action::ViewTelemetry,
        Action::WebSession,
        Action::RawTunnel,
        Action::Diagnostics,
        Action::Administer,
    ];

    #[test]
    fn every_role_and_action_inside_and_outside_the_scope() {
        let mine = [7];
        let scope = Scope { customers: &mine };
        for role in Role::ALL {
            for action in ACTIONS {
                let inside = permit(role, &scope, action, Some(7)).allowed;
                let outside = permit(role, &scope, action, Some(8)).allowed;
                let expected_inside = match role {
                    Role::Admin => true,
                    Role::Technician => action != Action::Administer,
                    Role::Viewer | Role::Customer => action == Action::ViewTelemetry,
                };
                assert_eq!(inside, expected_inside, "{role} {action:?} inside");
                assert_eq!(outside, role == Role::Admin, "{role} {action:?} outside");
            }
        }
    }

    #[test]
    fn reasons_name_what_is_missing() {
        let none: [i64; 0] = [];
        let p = permit(
            Role::Viewer,
            &Scope { customers: &none },
            Action::WebSession,
            Some(1),
        );
        assert!(
            p.reason.contains("viewer role may not open web sessions"),
            "{}",
            p.reason
        );
        let p = permit(
            Role::Technician,
            &Scope { customers: &none },
            Action::WebSession,
            Some(1),
        );
        assert!(
            p.reason.contains("not assigned to customer 1"),
            "{}",
            p.reason
        );
    }

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
