//! `tether-receiver`: the site-side agent receiver. All logic lives in the library.
fn main() {
    std::process::exit(tether::cli::receiver::main());
}
