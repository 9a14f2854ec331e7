//! Links the embedding build against the interpreter pyo3 found (set `PYO3_PYTHON` to
//! choose it; the Makefile uses the project venv's python) and records libpython's
//! folder as an rpath so the binary and tests run without `LD_LIBRARY_PATH`.
fn main() {
    if std::env::var_os("CARGO_FEATURE_EMBED").is_some() {
        pyo3_build_config::add_libpython_rpath_link_args();
    }
}
