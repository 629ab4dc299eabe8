fn main() {
    std::process::exit(tether::cli::agent::main());
}
