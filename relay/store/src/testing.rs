//! Faults on demand, for the relay's tests (feature `test-support`; never
//! in a production build).

use crate::{Result, Store};

impl Store {
    /// Makes storing the reading `id` fail: a storage fault in the middle
    /// of a batch.
    pub async fn fail_reading_insert(&self, id: &str) -> Result<()> {
        let id = id.replace('\'', "''");
        sqlx::query(&format!(
            "CREATE TRIGGER fail_{n} BEFORE INSERT ON readings WHEN NEW.id = '{id}' \
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
            n = id.len()
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
