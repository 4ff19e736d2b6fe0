//! Billing report schedules: per customer, the day of the month on or
//! after which the previous month's report is mailed, and the last month
//! queued (so a restart neither skips nor repeats one).

use crate::{Result, Store, Tx};

/// A stored schedule, with its customer's name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub customer_id: i64,
    pub customer: String,
    pub day: i64,
    /// `csv` or `xlsx`.
    pub format: String,
    /// JSON array, sorted.
    pub email_to: String,
    pub last_from: Option<String>,
    pub updated_at: String,
    pub updated_by: String,
}

const SELECT: &str = "SELECT s.customer_id, c.name AS customer, s.day, s.format, s.email_to, \
     s.last_from, s.updated_at, s.updated_by FROM billing_schedules s \
     JOIN customers c ON c.id = s.customer_id";

impl Store {
    /// Sets the customer's schedule; a changed schedule keeps the last
    /// month queued.
    pub async fn put_billing_schedule(
        &self,
        customer: i64,
        day: i64,
        format: &str,
        email_to: &str,
        now: &str,
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO billing_schedules (customer_id, day, format, email_to, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id) DO UPDATE SET \
             day = excluded.day, format = excluded.format, email_to = excluded.email_to, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(customer)
        .bind(day)
        .bind(format)
        .bind(email_to)
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the customer's schedule; whether there was one.
    pub async fn delete_billing_schedule(&self, customer: i64) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM billing_schedules WHERE customer_id = $1")
                .bind(customer)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    pub async fn billing_schedule(&self, customer: i64) -> Result<Option<ScheduleRow>> {
        Ok(
            sqlx::query_as(&format!("{SELECT} WHERE s.customer_id = $1"))
                .bind(customer)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every schedule (one per customer at most: few).
    pub async fn billing_schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(sqlx::query_as(&format!("{SELECT} ORDER BY s.customer_id"))
            .fetch_all(&self.pool)
            .await?)
    }
}

impl Tx {
    /// Records that the month starting `from` was queued for `customer`.
    pub async fn billing_queued(&mut self, customer: i64, from: &str) -> Result<()> {
        sqlx::query("UPDATE billing_schedules SET last_from = $1 WHERE customer_id = $2")
            .bind(from)
            .bind(customer)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
