//! eventmart-demo: EventMart end to end in one process — embedded broker
//! and registry, topics, every app, the generator and the live dashboard;
//! see `brook_apps::eventmart::demo`.

fn main() -> std::process::ExitCode {
    brook_apps::eventmart::demo::main()
}
