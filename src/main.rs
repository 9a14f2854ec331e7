//! `cerebros-bridge`: the command-line front end of the bridge (DESIGN §7).

mod cli;

/// Parses the command line, runs the subcommand and exits with its status.
///
/// The process ends through [`std::process::exit`], so an interpreter thread that is
/// stuck in a call can never keep it alive.
fn main() {
    let code = cli::run();
    cli::output::flush();
    std::process::exit(code);
}
