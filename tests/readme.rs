//! The README's code for Rust hosts is the code `make test-host` builds and runs.

use std::path::Path;

/// The first fenced block of `language` after `marker` in the README.
fn block_after(readme: &str, marker: &str, language: &str) -> String {
    let start = readme.find(marker).expect("the marker is in the README");
    let fence = format!("```{language}\n");
    let open = start + readme[start..].find(&fence).expect("a code block") + fence.len();
    let close = open + readme[open..].find("```").expect("the block ends");
    readme[open..close].to_owned()
}

#[test]
fn the_readme_host_code_is_the_fixture_that_make_test_host_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let code = block_after(&readme, "**5. The code.**", "rust");
    let fixture =
        std::fs::read_to_string(root.join("tests/fixtures/rust_host/examples/readme.rs")).unwrap();
    let fixture: String = fixture
        .lines()
        .filter(|line| !line.starts_with("//!"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        code, fixture,
        "README step 5 and tests/fixtures/rust_host/examples/readme.rs"
    );
    let build = block_after(&readme, "and a `build.rs` next to it", "rust");
    let fixture_build =
        std::fs::read_to_string(root.join("tests/fixtures/rust_host/build.rs")).unwrap();
    assert!(
        fixture_build.contains(build.trim()),
        "README's build.rs and the fixture's differ"
    );
}
