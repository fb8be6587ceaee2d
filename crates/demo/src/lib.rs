//! `threadline demo`: a small estate of instrumented Rust services, and Threadline's W3C Trace
//! Context implementation (levels 1 and 2) that every hop uses.

pub mod estate;
pub mod payments_grpc;
pub mod propagation;
pub mod w3c;
#[cfg(test)]
mod w3c_suite_tests;
#[cfg(test)]
mod w3c_tests;
