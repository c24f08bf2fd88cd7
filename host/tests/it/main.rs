//! The host's integration tests against local servers: kinesis-local
//! (started per test by tests/scripts/kinesis-local.sh) and moto (the S3
//! checkpoint store, SLUICE_TEST_S3_ENDPOINT from tests/scripts/services/moto.sh).
//!
//! One test binary with a module per area rather than a binary per file:
//! each binary links the whole host (wasmtime, arrow, the AWS SDKs), so
//! every extra one costs the suite a link and a compile of the shared
//! harness on every cold build.

mod chaos;
mod support;

mod checkpoint_s3;
mod dlq_s3;
mod kinesis_errors;
mod kinesis_faults;
mod kinesis_kpl;
mod kinesis_produce;
mod kinesis_source;
