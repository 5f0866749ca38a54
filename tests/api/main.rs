//! One integration-test binary: the real app on port 0, over the memory and local stores and
//! over a real S3 server (SeaweedFS, started by scripts/test).

mod abuse;
mod attacks;
mod auth;
mod aws_answers;
mod bad_input;
mod bench_cli;
mod bounds;
mod check_cli;
mod cli;
mod client;
mod contention;
mod drain;
mod elections;
mod events;
mod faults;
mod helpers;
mod lock_delay;
mod metrics;
mod openapi;
mod pages;
mod peers;
mod readiness;
mod round_trips;
mod routes;
mod rwlocks;
mod s3;
mod secrets;
mod semaphores;
mod shared_clients;
mod shared_events;
mod shared_lists;
mod sse;
mod tls;
mod values;
mod watch;
