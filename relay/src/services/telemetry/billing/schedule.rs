//! Billing reports by e-mail: per customer, a day of the month (1..=28)
//! on or after which the previous calendar month's report is queued in the
//! e-mail outbox, attached as CSV or XLSX, to a list of recipients. The
//! mail task checks on every pass (at least every 30 s); the month queued
//! is stored with the row in the same transaction, so a restart neither
//! skips a month nor sends one twice. Delivery, retries and their audit are
//! the outbox's.

use dwa_store::billing::ScheduleRow;
use dwa_store::mail_outbox::{MailAttachment, NewMail};
use serde::Serialize;

use super::{audit, compute, day_of, file_name, output, Format, Period};
use crate::services::telemetry::{alerts, Result, TelemetryError};
use crate::services::Services;

/// A schedule as the API takes it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// Day of the month (1..=28) on or after which last month is sent.
    pub day: i64,
    /// `csv` or `xlsx`.
    #[schema(value_type = String)]
    pub format: Format,
    /// At most 20 addresses.
    pub email_to: Vec<String>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleView {
    pub customer_id: i64,
    pub customer: String,
    pub day: i64,
    pub format: String,
    pub email_to: Vec<String>,
    /// First day of the last month queued.
    pub last_from: Option<String>,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<ScheduleRow> for ScheduleView {
    fn from(r: ScheduleRow) -> Self {
        ScheduleView {
            customer_id: r.customer_id,
            customer: r.customer,
            day: r.day,
            format: r.format,
            // Written by `set` only.
            email_to: serde_json::from_str(&r.email_to).unwrap_or_default(),
            last_from: r.last_from,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

/// The month to send at `now` (unix seconds), if any: the previous
/// calendar month, once today is on or after `day` and that month was not
/// queued yet.
pub fn due(day: i64, last_from: Option<&str>, now: i64) -> Option<Period> {
    let today: i64 = day_of(now).get(8..10)?.parse().ok()?;
    if today < day {
        return None;
    }
    let p = Period::previous_month(now);
    (last_from != Some(p.from.as_str())).then_some(p)
}

/// Sets the customer's schedule (the caller has checked the permission)
/// and wakes the mail task.
pub async fn set(
    svc: &Services,
    customer: i64,
    input: &ScheduleInput,
    actor: &str,
) -> Result<ScheduleView> {
    if !(1..=28).contains(&input.day) {
        return Err(TelemetryError::Invalid(
            "day: 1..=28 (every month has it)".into(),
        ));
    }
    let to = alerts::recipients("billing", &input.email_to)?;
    if to.is_empty() {
        return Err(TelemetryError::Invalid(
            "email_to: at least one address".into(),
        ));
    }
    let n = to.len();
    let to = serde_json::to_string(&to)
        .map_err(|e| TelemetryError::Internal(format!("recipients: {e}")))?;
    svc.store
        .put_billing_schedule(
            customer,
            input.day,
            input.format.as_str(),
            &to,
            &svc.time.rfc3339(),
            actor,
        )
        .await?;
    svc.audit
        .append(
            dwa_proto::audit::Event::TelemetryBillingSchedule {
                customer,
                day: input.day,
                format: input.format.as_str().into(),
                recipients: n as u64,
            },
            actor,
            None,
        )
        .await?;
    svc.telemetry.mail_wake.notify_one();
    get(svc, customer)
        .await?
        .ok_or_else(|| TelemetryError::NotFound(format!("no customer {customer}")))
}

pub async fn get(svc: &Services, customer: i64) -> Result<Option<ScheduleView>> {
    Ok(svc
        .store
        .billing_schedule(customer)
        .await?
        .map(ScheduleView::from))
}

/// Removes the customer's schedule (the caller has checked the
/// permission); whether there was one, and only then audited.
pub async fn remove(svc: &Services, customer: i64, actor: &str) -> Result<bool> {
    let removed = svc.store.delete_billing_schedule(customer).await?;
    if removed {
        svc.audit
            .append(
                dwa_proto::audit::Event::TelemetryBillingScheduleRemoved { customer },
                actor,
                None,
            )
            .await?;
    }
    Ok(removed)
}

/// Queues every schedule's due report; returns how many. Without
/// `[smtp]` nothing is queued (nor marked sent).
pub async fn queue_due(svc: &Services, now: i64) -> Result<usize> {
    if svc.cfg().smtp.is_none() {
        return Ok(0);
    }
    let mut queued = 0;
    for s in svc.store.billing_schedules().await? {
        let Some(period) = due(s.day, s.last_from.as_deref(), now) else {
            continue;
        };
        let format = Format::parse(&s.format)?;
        let report = compute(svc, s.customer_id, &period).await?;
        let bytes = output::render(&report, format)?;
        let name = file_name(&report, format);
        let customer = s.customer.replace(['\r', '\n'], " ");
        let subject = format!(
            "[DWA] {customer}: billing meter report {}..{}",
            period.from, period.to
        );
        let body = format!(
            "The billing meter report of {customer} for {} to {} is attached ({name}).\n\
             {} devices; {} counter drops, resets or jumps flagged.\n\
             Estimated values are marked in the file (columns start_basis, end_basis, estimated).\n",
            period.from,
            period.to,
            report.devices.len(),
            report.flags()
        );
        let at = svc.time.rfc3339();
        let mut tx = svc.store.begin().await?;
        tx.enqueue_mail(&NewMail {
            customer_id: s.customer_id,
            customer_name: &s.customer,
            mode: "immediate",
            recipients: &s.email_to,
            event: "billing.report",
            subject: &subject,
            body: &body,
            created_at: &at,
            due: now,
            attachment: Some(MailAttachment {
                name: &name,
                content_type: format.content_type(),
                bytes: &bytes,
            }),
        })
        .await?;
        tx.billing_queued(s.customer_id, &period.from).await?;
        tx.commit().await?;
        audit(svc, "relay", &report, format).await?;
        queued += 1;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::telemetry::billing::parse_day;

    #[test]
    fn due_once_a_month_on_or_after_the_day() {
        let at = |d: &str| parse_day("t", d).unwrap() + 3_600;
        assert_eq!(due(5, None, at("2026-07-04")), None);
        let p = due(5, None, at("2026-07-05")).unwrap();
        assert_eq!(
            (p.from.as_str(), p.to.as_str()),
            ("2026-06-01", "2026-06-30")
        );
        assert_eq!(due(5, Some("2026-06-01"), at("2026-07-20")), None);
        // Missed days (the relay was down) still send it.
        assert!(due(5, Some("2026-05-01"), at("2026-07-28")).is_some());
        let p = due(1, Some("2026-11-01"), at("2027-01-01")).unwrap();
        assert_eq!(p.from, "2026-12-01");
    }
}
