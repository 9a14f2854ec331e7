//! What the CLI writes: JSON documents on stdout, errors on stdout (`--json`) or
//! stderr, and the exit code of each error class.

use super::stdio;
use cerebros_bridge::core::error::{BridgeError, ErrorClass};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::io::Write;

/// Success.
pub const EXIT_OK: i32 = 0;
/// A failure that is none of the classes below (and a failed `validate` check).
pub const EXIT_FAILURE: i32 = 1;
/// Bad input: `contract` and `config` errors (clap's own usage errors also exit 2).
pub const EXIT_BAD_INPUT: i32 = 2;
/// A missing dependency: `dependency` errors.
pub const EXIT_DEPENDENCY: i32 = 3;
/// A call past its deadline: `timeout` errors.
pub const EXIT_TIMEOUT: i32 = 4;

/// The exit code for an error of `class`.
pub fn exit_code(class: ErrorClass) -> i32 {
    match class {
        ErrorClass::Contract | ErrorClass::Config => EXIT_BAD_INPUT,
        ErrorClass::Dependency => EXIT_DEPENDENCY,
        ErrorClass::Timeout => EXIT_TIMEOUT,
        _ => EXIT_FAILURE,
    }
}

/// `text` safe to print on a terminal: control characters (escape sequences, NUL,
/// newlines, C1 controls) are written as Rust escapes (`\u{1b}`, `\n`). Stored strings
/// (names, errors, ids) go through it wherever the CLI prints them for people.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// [`printable`], keeping the line breaks and tabs of multi-line text (a traceback).
fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split('\t')
                .map(|part| printable(part).into_owned())
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes one line to the CLI's stdout, ignoring a closed pipe (`| head`).
pub fn stdout_line(text: &str) {
    let _ = stdio::stdout().write_all(format!("{text}\n").as_bytes());
}

/// Writes one line to the CLI's stderr.
pub fn stderr_line(text: &str) {
    let _ = stdio::stderr().write_all(format!("{text}\n").as_bytes());
}

/// Flushes the CLI's stdout and stderr before the process exits without running
/// destructors.
pub fn flush() {
    let _ = stdio::stdout().flush();
    let _ = stdio::stderr().flush();
}

/// Writes `value` to stdout: pretty, or on one line when `compact`.
pub fn print_json(value: &Value, compact: bool) {
    let text = if compact {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    // A `Value` always serializes; fall back to its Display just in case.
    stdout_line(&text.unwrap_or_else(|_| value.to_string()));
}

/// Reports `err`: `{"ok": false, "error": {...}}` on stdout with `--json`, else
/// `error[<class>]: <message>` on stderr, with the Python traceback of an `exception`
/// (an error the service raised on purpose — a bad dataset is `contract` — says all in
/// its message; `--json` keeps every traceback in `details`). Returns the exit code of
/// its class.
pub fn report_error(err: &BridgeError, json: bool) -> i32 {
    if json {
        print_json(&json!({"ok": false, "error": err.to_json()}), true);
    } else {
        stderr_line(&format!(
            "error[{}]: {}",
            err.class,
            printable(&err.message)
        ));
        let traceback = err.details.get("traceback");
        if let Some(traceback) = traceback.filter(|_| err.class == ErrorClass::Exception) {
            match traceback {
                Value::String(text) => stderr_line(&printable_lines(text.trim_end())),
                other => stderr_line(&other.to_string()),
            }
        }
    }
    exit_code(err.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain ünïcode"), "plain ünïcode");
        assert_eq!(
            printable("a\u{1b}[2Jb\nc\0d\u{9b}"),
            "a\\u{1b}[2Jb\\nc\\u{0}d\\u{9b}"
        );
        assert_eq!(printable_lines("a\n\tb\u{7}"), "a\n\tb\\u{7}");
    }

    #[test]
    fn classes_map_to_documented_exit_codes() {
        assert_eq!(exit_code(ErrorClass::Contract), 2);
        assert_eq!(exit_code(ErrorClass::Config), 2);
        assert_eq!(exit_code(ErrorClass::Dependency), 3);
        assert_eq!(exit_code(ErrorClass::Timeout), 4);
        for class in [
            ErrorClass::Exception,
            ErrorClass::SubprocessExit,
            ErrorClass::ParseError,
            ErrorClass::SystemError,
            ErrorClass::Overloaded,
            ErrorClass::Cancelled,
        ] {
            assert_eq!(exit_code(class), 1, "{class}");
        }
    }
}
