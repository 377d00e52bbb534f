use std::process::ExitCode;

fn main() -> ExitCode {
    etcd_bootstrap::cli::main()
}
