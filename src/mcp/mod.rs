//! The protocol face: the MCP server, its tools, and their argument and result types.
//!
//! One file per tool family: [`indexes`] (create, list, describe, delete an index),
//! [`vectors`] (upsert, update, delete, fetch rows), [`search`], [`embed`] (embed, flush),
//! [`stats`]. [`server`] holds the handler, its identity and its instructions;
//! [`transport`] frames JSON-RPC lines and answers the ones rmcp could not parse. Tools
//! validate and translate; they run no SQL and hold no state beyond the store and pipeline
//! handles.

pub mod args;
pub mod embed;
pub mod indexes;
pub mod search;
pub mod server;
pub mod stats;
pub mod transport;
pub mod vectors;

pub use server::{serve_relay, StrideServer};
