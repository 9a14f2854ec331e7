//! Opening a store: where its file may be, the SQLite settings, and bringing its schema
//! up to date (the migrations are in `schema.rs`).

use super::{db_error, schema, Store};
use crate::core::error::{BridgeError, ErrorClass, Result};
use parking_lot::Mutex;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Why `path` cannot hold a store, if it cannot. A store is a regular file, or a file
/// still to be created whose nearest existing ancestor is a folder. Refused: an empty
/// path and `:memory:` (SQLite would keep the results in memory and lose them), and a
/// device, FIFO or folder (`/dev/null` would swallow them and SQLite would write
/// `/dev/null-journal` beside it).
pub fn check_store_path(path: &Path) -> std::result::Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err(
            "the path is empty (SQLite would keep the results in memory and lose them)".into(),
        );
    }
    if path == Path::new(":memory:") {
        return Err("an in-memory database loses every result".into());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => Err(format!(
            "{} is a {}, not a regular file",
            path.display(),
            file_kind(&meta)
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let nearest = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .find(|a| a.exists());
            match nearest {
                Some(folder) if !folder.is_dir() => {
                    Err(format!("{} is not a folder", folder.display()))
                }
                _ => Ok(()),
            }
        }
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// What a non-regular file is, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "folder"
    } else if kind.is_char_device() || kind.is_block_device() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// The file of a `sqlite://PATH` URL.
pub fn store_path(url: &str) -> Result<PathBuf> {
    let path = url.strip_prefix("sqlite://").ok_or_else(|| {
        BridgeError::new(
            ErrorClass::Config,
            format!("store.url = {url:?}: expected sqlite://PATH"),
        )
    })?;
    let path = path.split('?').next().unwrap_or(path);
    Ok(PathBuf::from(path))
}
