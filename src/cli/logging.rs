//! Log set-up: `tracing` events go to the CLI's stderr, filtered by `-v` or `RUST_LOG`.

use super::{output, stdio};
use tracing_subscriber::EnvFilter;

/// The default log level for a `-v` count: 0 warn, 1 info, 2 debug, 3+ trace.
pub fn level_for(verbosity: u8) -> &'static str {
    match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// The filter to log with: `RUST_LOG` when set and non-empty, else the `-v` level.
fn filter(verbosity: u8) -> EnvFilter {
    let level = level_for(verbosity);
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|err| {
            output::stderr_line(&format!(
                "warning: ignoring RUST_LOG={spec:?} ({err}); logging at {level}"
            ));
            EnvFilter::new(level)
        }),
        _ => EnvFilter::new(level),
    }
}

/// Installs the global subscriber: human-readable lines on the CLI's real stderr
/// (coloured only on a terminal), so stdout holds only command output, and the log
/// never goes through the pipe that [`stdio`] reads into it.
pub fn init(verbosity: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbosity))
        .with_writer(stdio::stderr)
        .with_ansi(stdio::stderr_is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::level_for;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for(0), "warn");
        assert_eq!(level_for(1), "info");
        assert_eq!(level_for(2), "debug");
        assert_eq!(level_for(3), "trace");
        assert_eq!(level_for(9), "trace");
    }
}
