//! The rules of `store.url`: a `sqlite://` URL whose path can hold a store. The store
//! (`nas::store`), `validate` and config validation all ask these.

use super::Config;
use crate::core::bounded_read;
use crate::core::error::{BridgeError, ErrorClass, Result};
use std::path::{Path, PathBuf};

impl Config {
    /// `store.url` is a `sqlite://` URL whose path can hold a store (see
    /// [`check_store_path`]).
    pub(super) fn check_store_url(&self) -> Result<()> {
        let url = &self.store.url;
        let Ok(path) = store_path(url) else {
            let expected = "expected a sqlite:// URL such as sqlite://cerebros.db";
            return Err(self.invalid("store.url", format_args!("{url:?}"), expected));
        };
        check_store_path(&path).map_err(|reason| {
            let expected = format!(
                "{reason}; expected sqlite://PATH naming a regular file, or a new file in a folder"
            );
            self.invalid("store.url", format_args!("{url:?}"), &expected)
        })
    }
}

/// Why `path` cannot hold a store, if it cannot. A store is a regular file, or a file
/// still to be created whose nearest existing ancestor is a folder. Refused: an empty
/// path, `:memory:` and SQLite's `file:` URIs (SQLite would keep the results in memory and
/// lose them), and a
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
    if path.to_string_lossy().starts_with("file:") {
        // SQLite reads such a name as a URI: `file::memory:?cache=shared` is in memory.
        return Err(
            "a file: URI is SQLite's own syntax (file::memory: keeps the results in memory \
             and loses them); give the store's path"
                .into(),
        );
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => check_sqlite_header(path, meta.len()),
        Ok(meta) => Err(format!(
            "{} is a {}, not a regular file",
            path.display(),
            bounded_read::file_kind(&meta)
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

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A file that is not empty must be a SQLite database: anything else would be refused by
/// SQLite at the first query (`file is not a database`), after `validate` said `ok`.
fn check_sqlite_header(path: &Path, len: u64) -> std::result::Result<(), String> {
    use std::io::Read;
    if len == 0 {
        return Ok(()); // SQLite makes an empty file a database
    }
    let mut file = std::fs::File::open(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut header = [0u8; 16];
    let is_sqlite = len >= 16 && file.read_exact(&mut header).is_ok() && &header == SQLITE_HEADER;
    if is_sqlite {
        return Ok(());
    }
    Err(format!(
        "{} is not a SQLite database (a store is a file SQLite made; name a new file)",
        path.display()
    ))
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
