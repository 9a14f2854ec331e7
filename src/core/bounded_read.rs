//! Reading a file a user names (a payload, a config, a run spec) with a size limit.
//!
//! The file may be anything: a regular file, a FIFO that never ends, `/dev/zero`. A
//! regular file over the limit is refused from its size before any byte is read; any
//! other file is read at most `limit + 1` bytes, so memory never grows past the limit.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read, or is not UTF-8.
    Io(io::Error),
    /// The file holds more than the limit: `size` when its metadata says how much
    /// (a regular file), `None` for a stream that went on past the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
        /// The file's size, when known.
        size: Option<u64>,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(err) => err.fmt(f),
            ReadError::TooLarge {
                limit,
                size: Some(size),
            } => write!(f, "it is {size} bytes, over the limit of {limit}"),
            ReadError::TooLarge { limit, size: None } => {
                write!(f, "it holds more than the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(err) => Some(err),
            ReadError::TooLarge { .. } => None,
        }
    }
}

/// Reads the UTF-8 text of `path`, refusing more than `limit` bytes.
///
/// ```
/// use cerebros_bridge::core::bounded_read::{read_text, ReadError};
/// assert!(matches!(
///     read_text(std::path::Path::new("/dev/zero"), 1024),
///     Err(ReadError::TooLarge { limit: 1024, size: None })
/// ));
/// ```
pub fn read_text(path: &Path, limit: usize) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    read_open(file, limit)
}

/// [`read_text`], except that a FIFO no process has open for writing reads as empty at
/// once instead of waiting for a writer — in `open(2)`, where neither a deadline nor
/// Ctrl-C can stop it. For files read before anything can be cancelled (a config, a run
/// spec); a pipe that has its writer (`<(cat spec.toml)`) reads as usual.
pub fn read_text_now(path: &Path, limit: usize) -> Result<String, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    // Opened: reads may block again (they end at once at EOF when nobody writes).
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns; no memory is passed.
    let cleared = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) >= 0
    };
    if !cleared {
        return Err(ReadError::Io(io::Error::last_os_error()));
    }
    read_open(file, limit)
}

fn read_open(file: std::fs::File, limit: usize) -> Result<String, ReadError> {
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.is_file() && meta.len() > limit as u64 {
        return Err(ReadError::TooLarge {
            limit,
            size: Some(meta.len()),
        });
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge {
            limit,
            size: meta.is_file().then_some(bytes.len() as u64),
        });
    }
    String::from_utf8(bytes)
        .map_err(|err| ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, err.utf8_error())))
}

/// What a file that is not a regular file is, for messages: `directory`, `character
/// device`, `block device`, `FIFO`, `socket` or `special file`.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "directory"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_files_and_refuses_big_ones_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(read_text(&path, 5).unwrap(), "hello");
        match read_text(&path, 4) {
            Err(ReadError::TooLarge {
                limit: 4,
                size: Some(5),
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_endless_stream_stops_at_the_limit() {
        let err = read_text(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(err.to_string(), "it holds more than the limit of 10 bytes");
    }

    #[test]
    fn missing_and_non_utf8_files_are_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_text(&dir.path().join("missing"), 10),
            Err(ReadError::Io(_))
        ));
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&path, 10), Err(ReadError::Io(_))));
    }
}
