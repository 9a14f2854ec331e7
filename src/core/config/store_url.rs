//! The check of `store.url`: a `sqlite://` URL whose path can hold a store.

use super::Config;
use crate::core::error::Result;

impl Config {
    /// `store.url` is a `sqlite://` URL whose path can hold a store (see
    /// [`crate::nas::store::check_store_path`]).
    pub(super) fn check_store_url(&self) -> Result<()> {
        let url = &self.store.url;
        let Ok(path) = crate::nas::store::store_path(url) else {
            let expected = "expected a sqlite:// URL such as sqlite://cerebros.db";
            return Err(self.invalid("store.url", format_args!("{url:?}"), expected));
        };
        crate::nas::store::check_store_path(&path).map_err(|reason| {
            let expected = format!(
                "{reason}; expected sqlite://PATH naming a regular file, or a new file in a folder"
            );
            self.invalid("store.url", format_args!("{url:?}"), &expected)
        })
    }
}
