//! `kubectl-hsm`: see the library's documentation.

fn main() -> std::process::ExitCode {
    kubectl_hsm::main()
}
