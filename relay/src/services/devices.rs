//! Devices, agents and customers as an administrator manages them:
//! registering a device by hand, removing a device, revoking an agent,
//! erasing a customer. Each removal first ends every grant reaching what
//! is removed (web sessions, tunnels: their connections close), then
//! removes it, and audits.

use dwa_policy::roles::Action;
use dwa_proto::audit::{AdminCommand, Event};
use dwa_store::customers::Erased;
use dwa_store::grants::Selector;
use serde::Serialize;

use crate::services::auth::{AuthError, Principal};
use crate::services::error::{Class, Failure};
use crate::services::grants::{self, EndReason, GrantError};
use crate::services::Services;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
}

impl Failure for DeviceError {
    fn class(&self) -> Class {
        match self {
            DeviceError::Invalid(_) => Class::Invalid,
            DeviceError::NotFound(_) => Class::NotFound,
            DeviceError::Auth(e) => e.class(),
            DeviceError::Store(e) => e.class(),
            DeviceError::Grant(e) => e.class(),
            DeviceError::Audit(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            DeviceError::Auth(e) => e.code(),
            _ => match self.class() {
                Class::Invalid => "invalid",
                Class::NotFound => "not_found",
                Class::Conflict => "conflict",
                _ => "internal",
            },
        }
    }
}

/// Who acts: a user through the API, or a command on the relay host.
pub enum Actor<'a> {
    User(&'a Principal),
    Local(&'a str),
}

impl Actor<'_> {
    pub(crate) fn name(&self) -> String {
        match self {
            Actor::User(p) => p.actor(),
            Actor::Local(a) => a.to_string(),
        }
    }

    fn require_admin(&self) -> Result<(), DeviceError> {
        Ok(self.check_admin()?)
    }

    /// An administrator, or a command on the relay host.
    pub(crate) fn check_admin(&self) -> Result<(), AuthError> {
        match self {
            Actor::User(p) => p.require(Action::Administer, None),
            Actor::Local(_) => Ok(()),
        }
    }
}

/// A device registered by hand.
#[derive(Debug, Clone, Serialize)]
pub struct AddedDevice {
    pub id: i64,
    pub agent: String,
    pub address: String,
    pub name: Option<String>,
}

/// Registers a device behind `agent` (id or unambiguous name).
pub async fn add(
    svc: &Services,
    by: Actor<'_>,
    agent: &str,
    address: &str,
    name: Option<&str>,
) -> Result<AddedDevice, DeviceError> {
    by.require_admin()?;
    let address = address.trim();
    if address.is_empty() || address.len() > 253 || address.contains(char::is_whitespace) {
        return Err(DeviceError::Invalid(format!(
            "address {address:?}: expected an IP address or host name"
        )));
    }
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > 200 || n.chars().any(char::is_control)) {
        return Err(DeviceError::Invalid(
            "name must be 1..=200 characters".into(),
        ));
    }
    let a = svc.store.find_agent(agent).await?;
    let id = svc
        .store
        .add_device(&a.id, address, name, &svc.time.rfc3339())
        .await?;
    svc.audit
        .append(
            Event::AdminCommand(AdminCommand::DeviceAdd {
                device: id,
                address: address.to_string(),
                name: name.map(str::to_string),
            }),
            &by.name(),
            Some(&a.id),
        )
        .await?;
    Ok(AddedDevice {
        id,
        agent: a.id,
        address: address.to_string(),
        name: name.map(str::to_string),
    })
}

/// Removes a device: its web sessions and tunnels end, then it and its
/// readings, alerts and certificates go.
pub async fn remove(svc: &Services, by: Actor<'_>, id: i64) -> Result<(), DeviceError> {
    by.require_admin()?;
    let target = svc.store.device_target(id).await?;
    let who = by.name();
    grants::end(svc, Selector::Device(id), EndReason::DeviceRemoved, &who).await?;
    if !svc.store.remove_device(id).await? {
        return Err(DeviceError::NotFound(format!("no device {id}")));
    }
    svc.audit
        .append(
            Event::AdminCommand(AdminCommand::DeviceRemove {
                device: id,
                address: target.address.clone(),
            }),
            &who,
            Some(&target.agent_id),
        )
        .await?;
    Ok(())
}

/// Revokes an agent's identity: everything reaching its devices ends.
/// The caller drops its live session (on the relay that holds it).
pub async fn revoke_agent(
    svc: &Services,
    by: Actor<'_>,
    agent: &str,
) -> Result<(String, bool), DeviceError> {
    by.require_admin()?;
    let a = svc.store.find_agent(agent).await?;
    let changed = svc.store.revoke_agent(&a.id, &svc.time.rfc3339()).await?;
    let who = by.name();
    grants::end(
        svc,
        Selector::Agent(a.id.clone()),
        EndReason::AgentRevoked,
        &who,
    )
    .await?;
    svc.audit
        .append(
            Event::AdminCommand(AdminCommand::AgentRevoke { changed }),
            &who,
            Some(&a.id),
        )
        .await?;
    if let Some(conn) = svc.agents.get(&a.id) {
        conn.disconnect("agent revoked").await;
    }
    Ok((a.id, changed))
}

/// Erases a customer and its data; everything reaching its devices ends
/// first. One audit record says so (the log itself is append-only).
pub async fn erase_customer(
    svc: &Services,
    by: Actor<'_>,
    customer: i64,
) -> Result<Erased, DeviceError> {
    by.require_admin()?;
    let c = svc
        .store
        .customer(customer)
        .await?
        .ok_or_else(|| DeviceError::NotFound(format!("no customer {customer}")))?;
    let who = by.name();
    grants::end(
        svc,
        Selector::Customer(customer),
        EndReason::CustomerRemoved,
        &who,
    )
    .await?;
    let agents: Vec<String> = svc
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| a.customer_id == customer)
        .map(|a| a.id)
        .collect();
    for a in &agents {
        svc.store.revoke_agent(a, &svc.time.rfc3339()).await?;
        if let Some(conn) = svc.agents.get(a) {
            conn.disconnect("its customer was erased").await;
        }
    }
    let erased = svc
        .store
        .erase_customer(customer, &svc.time.rfc3339())
        .await?;
    svc.audit
        .append(
            Event::CustomerErase {
                customer,
                name: c.name.clone(),
                agents,
                devices: erased.devices,
                readings: erased.readings,
                alerts: erased.alerts,
                users_deactivated: erased.users_deactivated,
            },
            &who,
            None,
        )
        .await?;
    Ok(erased)
}
