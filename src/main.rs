fn main() -> std::process::ExitCode {
    mindcastle::cli::run()
}
