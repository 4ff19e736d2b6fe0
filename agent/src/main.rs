//! `dwa-agent`: parse the command line and run it (see `cli.rs`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
