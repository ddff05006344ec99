//! isola-cluster against a real nats-server (Debian's `nats-server`; CI
//! installs it): one test binary.

mod kv;
mod nats;
mod placement;
mod queued;
mod registry;
mod transport;
