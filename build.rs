//! Links the embedding build against the interpreter pyo3 found (set `PYO3_PYTHON` to
//! choose it; the Makefile uses the project venv's python), records libpython's folder
//! as an rpath so the binary and tests run without `LD_LIBRARY_PATH` (a dependent host
//! needs its own: README), and passes that interpreter and folder to the crate
//! (`CEREBROS_EMBEDDED_PYTHON`, `CEREBROS_EMBEDDED_LIBDIR`, for its checks). Without
//! `PYO3_PYTHON` it says, as a cargo warning, which interpreter it linked: pyo3's own
//! search may take another Python than the venv the host will use at run time.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if std::env::var_os("CARGO_FEATURE_EMBED").is_none() {
        return;
    }
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    let version = config.version();
    if let Some(executable) = config.executable() {
        println!("cargo:rustc-env=CEREBROS_EMBEDDED_PYTHON={executable}");
    }
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-env=CEREBROS_EMBEDDED_LIBDIR={lib_dir}");
    }
    let executable = config.executable().unwrap_or("an unknown executable");
    let library = match (config.lib_dir(), config.lib_name()) {
        (Some(dir), Some(name)) => format!("lib{name} in {dir}"),
        (None, Some(name)) => format!("lib{name}"),
        _ => "no libpython".to_owned(),
    };
    if std::env::var_os("PYO3_PYTHON").is_none() {
        println!(
            "cargo:warning=cerebros-bridge embeds Python {version} from {executable} ({library}), \
             found by pyo3 because PYO3_PYTHON is unset; to choose the interpreter (the one your \
             venv was made with), build with PYO3_PYTHON=/path/to/venv/bin/python"
        );
    }
}
