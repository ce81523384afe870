//! The `hub` binary: parse the command line and hand over to `hub::cli`.

fn main() -> std::process::ExitCode {
    hub::cli::main()
}
