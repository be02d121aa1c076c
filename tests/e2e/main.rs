//! End-to-end tests: the real `shopstream` binary on a free port, driven over
//! HTTP, on the embedded backend and on DynamoDB (moto's server, started by
//! `scripts/test.sh`). One test binary for all, so it links once.

mod helpers;

mod alerts;
mod auth;
mod cli;
mod commerce;
mod faults;
mod leases;
mod limits;
mod oidc;
mod ops;
mod pipeline;
mod products;
mod recs;
mod shutdown;
mod traces;
mod ws;
