//! The `circlefs` binary: everything is in `circlefs::cli`.

fn main() -> std::process::ExitCode {
    circlefs::cli::main()
}
