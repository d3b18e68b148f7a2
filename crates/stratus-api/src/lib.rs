//! The Stratus HTTP API (`/v1/…`, JSON) and the client the CLI calls it with.
//!
//! Every error is a JSON body `{"error": {"code": "...", "message": "..."}}` with a fitting
//! HTTP status; see [`server`] for the routes.

pub mod auth;
pub mod client;
pub mod console;
pub mod server;
pub mod types;

pub use auth::Access;
pub use client::{ApiClient, ClientError};
pub use server::{MetricsSource, ServerInfo, router};
