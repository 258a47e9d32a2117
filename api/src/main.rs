fn main() -> anyhow::Result<std::process::ExitCode> {
    api::cli::main()
}
