//! Where trial artifacts live, and the one check that decides whether a file a service
//! names is one of them (DESIGN §10: an artifact is accepted only when its real path lies
//! inside its run's artifacts folder).
//!
//! Artifacts go to `artifacts/<run_id>/` beside the store file. Run ids are made by the
//! host (`run-<stamp>-<hex>`), so they are already safe file names and the run's folder
//! is `artifacts/<run_id>` exactly, as the service's `artifact_path` builds it.

use std::path::{Path, PathBuf};

/// The artifacts folder of a store: `artifacts/` beside the store file, absolute.
pub fn artifact_dir(store_file: &Path) -> PathBuf {
    let parent = store_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = parent.join("artifacts");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The folder of one run's artifacts.
pub fn run_folder(artifact_dir: &Path, run_id: &str) -> PathBuf {
    artifact_dir.join(run_id)
}

/// The real path of the regular file `uri` names, when it lies inside `folder` (both
/// with symlinks resolved); otherwise why not. Only `file://` URIs name local files.
///
/// ```
/// use cerebros_bridge::nas::artifacts::contained_file;
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.npz"), b"x").unwrap();
/// let uri = format!("file://{}/a.npz", dir.path().display());
/// assert!(contained_file(&uri, dir.path()).is_ok());
/// assert!(contained_file("file:///etc/passwd", dir.path()).is_err());
/// ```
pub fn contained_file(uri: &str, folder: &Path) -> Result<PathBuf, String> {
    let path = file_uri_path(uri).ok_or_else(|| format!("{uri:?} is not a file:// URI"))?;
    let real = std::fs::canonicalize(&path)
        .map_err(|e| format!("{} cannot be resolved: {e}", path.display()))?;
    let root = std::fs::canonicalize(folder).map_err(|e| {
        format!(
            "the run's artifacts folder {} is missing: {e}",
            folder.display()
        )
    })?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{} is outside the run's artifacts folder {}",
            real.display(),
            root.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    Ok(real)
}

/// The absolute path of a `file://` URI (`file:///p` or `file://localhost/p`),
/// percent-decoded; `None` for any other URI or an invalid escape.
fn file_uri_path(uri: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let rest = uri.strip_prefix("file://")?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return None;
    }
    let mut bytes = Vec::with_capacity(rest.len());
    let mut input = rest.bytes();
    while let Some(byte) = input.next() {
        if byte != b'%' {
            bytes.push(byte);
            continue;
        }
        let hex = [input.next()?, input.next()?];
        let decoded = u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?;
        bytes.push(decoded);
    }
    if bytes.contains(&0) {
        return None;
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_the_folder_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("run-1");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("t 0.npz"), b"x").unwrap();
        std::fs::write(dir.path().join("outside.npz"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.npz"), folder.join("link.npz"))
            .unwrap();
        let uri = |p: &Path| format!("file://{}", p.display()).replace(' ', "%20");
        assert!(contained_file(&uri(&folder.join("t 0.npz")), &folder).is_ok());
        for refused in [
            uri(&dir.path().join("outside.npz")),
            uri(&folder.join("link.npz")),
            uri(&folder.join("../outside.npz")),
            uri(&folder),
            uri(&folder.join("missing.npz")),
            "file:///etc/passwd".into(),
            "https://example.com/a.npz".into(),
            "file://host/a.npz".into(),
            "file:///a%2".into(),
            "file:///a%00b".into(),
        ] {
            assert!(contained_file(&refused, &folder).is_err(), "{refused}");
        }
    }
}
