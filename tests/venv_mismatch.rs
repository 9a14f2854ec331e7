//! `Client::start` refuses a venv made with another Python than the embedded one, with
//! an error that names both fixes. A test binary of its own: the interpreter starts once
//! per process, and this start fails for good.

use cerebros_bridge::core::error::ErrorClass;
use cerebros_bridge::inprocess::interpreter;
use cerebros_bridge::{Client, Config, Mode};

#[test]
fn a_venv_of_another_python_fails_start_naming_the_fixes() {
    // A venv of "Python 3.1": no real interpreter has that version.
    let venv = tempfile::tempdir().unwrap();
    std::fs::write(venv.path().join("pyvenv.cfg"), "version = 3.1.0\n").unwrap();
    std::fs::create_dir_all(venv.path().join("bin")).unwrap();
    std::fs::create_dir_all(venv.path().join("lib/python3.1/site-packages")).unwrap();
    let python = venv.path().join("bin/python");
    std::fs::write(&python, "").unwrap();
    let config = Config {
        mode: Mode::InProcess,
        python_executable: Some(python.clone()),
        repo_path: concat!(env!("CARGO_MANIFEST_DIR"), "/python").into(),
        ..Config::default()
    };

    let err = Client::start(&config).err().expect("the start fails");

    assert_eq!(err.class, ErrorClass::Dependency, "{err}");
    let embedded = interpreter::embedded_version();
    let wanted = interpreter::major_minor(&embedded);
    for part in [
        format!("is Python 3.1, but this program embeds Python {embedded}"),
        format!(
            "use a Python {wanted} venv (set VIRTUAL_ENV, python_executable or CEREBROS_PYTHON)"
        ),
        format!(
            "or rebuild this program with PYO3_PYTHON={}",
            python.display()
        ),
    ] {
        assert!(err.message.contains(&part), "{part:?} not in {err}");
    }
}
