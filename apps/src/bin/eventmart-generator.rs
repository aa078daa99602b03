//! eventmart-generator: EventMart's shoppers and order lifecycles into
//! Kafka, Avro through the schema registry; see
//! `brook_apps::eventmart::generate`.

fn main() -> std::process::ExitCode {
    brook_apps::eventmart::generate::main()
}
