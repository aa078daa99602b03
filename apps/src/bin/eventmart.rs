//! eventmart: runs EventMart's apps (all, or the ones named) and serves
//! the live dashboard; see `brook_apps::eventmart::run`.

fn main() -> std::process::ExitCode {
    brook_apps::eventmart::run::main()
}
