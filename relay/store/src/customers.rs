//! Customers: the dealer's clients, each with its agents, devices and users.

use crate::{unique, Result, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct CustomerRow {
    pub id: i64,
    pub name: String,
    pub created_at: String,
}

impl Store {
    pub async fn add_customer(&self, name: &str, now: &str) -> Result<i64> {
        let r = sqlx::query_scalar(
            "INSERT INTO customers (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        unique(r, || format!("customer {name:?} already exists"))
    }

    pub async fn customer_id(&self, name: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM customers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no customer named {name:?}")))
    }

    pub async fn customer(&self, id: i64) -> Result<Option<CustomerRow>> {
        Ok(
            sqlx::query_as("SELECT id, name, created_at FROM customers WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn customers(&self) -> Result<Vec<CustomerRow>> {
        Ok(
            sqlx::query_as("SELECT id, name, created_at FROM customers ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
