//! brook's end-to-end test suite lives in `tests/tests/`; this library is
//! empty on purpose (a package needs a target).
//!
//! Every test starts the brokers it needs through `brook-testkit`. Run them
//! against an external Kafka with `BROOK_BOOTSTRAP=host:port make test-kafka`.
