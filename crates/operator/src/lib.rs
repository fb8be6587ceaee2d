//! Threadline's operator: a drop-in for the OpenTelemetry Operator.
//!
//! - [`crd`]: the upstream `OpenTelemetryCollector` and `Instrumentation` resources as read here.
//! - [`collector`]: one collector resource → ConfigMap, ServiceAccount, Services, workload.
//! - [`wiring`]: upstream's config defaults, and routing agents by trace id to scaled
//!   tail-sampling gateways.
//! - [`inject`]: auto-instrumentation of pods, as upstream's webhook does it.
//! - [`webhook`]: the HTTPS admission server (AdmissionReview v1).
//! - [`certs`]: the webhook's self-generated CA and serving certificate.
//! - [`install`]: every object needed to run the operator (`threadline install`, `deploy/`).
//! - [`render`]: what the operator would create for resources in files (`operator render`).
//! - [`controller`]: the reconcile loop against a cluster.

pub mod certs;
pub mod collector;
pub mod controller;
pub mod crd;
pub mod inject;
pub mod install;
pub mod render;
pub mod run;
pub mod webhook;
pub mod wiring;
