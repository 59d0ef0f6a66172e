//! `hsmctl`: see the library's documentation.

fn main() -> std::process::ExitCode {
    hsmctl::main()
}
