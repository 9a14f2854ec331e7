//! Opening a store: where its file may be, the SQLite settings, and bringing its schema
//! up to date (the migrations are in `schema.rs`).

use super::{db_error, schema, Store};
use crate::core::config::{check_store_path, store_path};
use crate::core::error::{BridgeError, ErrorClass, Result};
use parking_lot::Mutex;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Statements kept prepared per connection (recording a trial reuses about a dozen).
const STATEMENT_CACHE: usize = 32;

impl Store {
    /// Opens (creating if needed) the store named by `url` (`sqlite://PATH`, relative
    /// to the current directory) and brings its schema up to date.
    pub fn open_url(url: &str) -> Result<Store> {
        Store::open(&store_path(url)?)
    }

    /// Opens (creating if needed) the store file at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        check_store_path(path).map_err(|reason| {
            BridgeError::new(
                ErrorClass::Config,
                format!("store {}: {reason}", path.display()),
            )
            .with_detail("key", "store.url")
        })?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                BridgeError::new(
                    ErrorClass::SystemError,
                    format!("store: cannot create {}: {e}", parent.display()),
                )
            })?;
        }
        let conn = Connection::open(path).map_err(db_error("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_error("busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error("WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error("synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_error("foreign keys"))?;
        // Room for every statement a trial's records prepare once and reuse.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let store = Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Applies the migrations this file lacks. Each step re-reads the version inside an
    /// immediate (write-locked) transaction, so processes opening a new store at the
    /// same time never apply a migration twice.
    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn.lock();
        loop {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_error("migration"))?;
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(db_error("schema version"))?;
            let version = version.max(0) as usize;
            if version > schema::MIGRATIONS.len() {
                return Err(BridgeError::new(
                    ErrorClass::Config,
                    format!(
                        "store {} has schema version {version}, newer than this build knows ({}); upgrade cerebros-bridge",
                        self.path.display(),
                        schema::MIGRATIONS.len()
                    ),
                ));
            }
            let Some(sql) = schema::MIGRATIONS.get(version) else {
                return Ok(());
            };
            tx.execute_batch(sql).map_err(db_error("migration"))?;
            tx.pragma_update(None, "user_version", (version + 1) as i64)
                .map_err(db_error("migration"))?;
            tx.commit().map_err(db_error("migration"))?;
        }
    }
}
