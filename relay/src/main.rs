//! `dwa-relay`: parse the command line and run it. The commands live in
//! `cli.rs`; everything else in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
