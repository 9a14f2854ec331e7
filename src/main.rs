//! `cerebros-bridge`: the command-line front end of the bridge (DESIGN §7).

mod cli;

/// mimalloc: the bridge allocates many small JSON nodes per call; it is ~2x faster
/// than the system allocator at that here (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the command line, runs the subcommand and exits with its status.
///
/// The process ends through [`std::process::exit`], so an interpreter thread that is
/// stuck in a call can never keep it alive.
fn main() {
    let code = cli::run();
    cli::stdio::finish();
    std::process::exit(code);
}
