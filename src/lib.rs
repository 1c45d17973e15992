//! muster: one MCP endpoint for a fleet of Kubernetes clusters.
//!
//! Desired state (`crd`) feeds the `supervisor`, which runs one `backend` actor per MCPServer.
//! Backends report capabilities to the `routing` actor, which publishes the catalog. Agents reach
//! the catalog through `frontend` (HTTP) and `mcp` (the protocol), and calls go straight to a
//! backend's live session.

pub mod app;
pub mod auth;
pub mod backend;
pub mod caller;
pub mod cli;
pub mod config;
pub mod crd;
pub mod egress;
pub mod frontend;
pub mod mcp;
pub mod routing;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod template;
pub mod workflow;
