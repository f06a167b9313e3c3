//! qrlogin-relay: log in to PC websites with WeChat.
//!
//! The PC page asks for a [`session::LoginSession`], shows its branded code, and is pushed the
//! result; the mini-program confirms; the website backend redeems a one-time ticket.

pub mod account_hook;
pub mod allocator;
pub mod audit;
pub mod client_ip;
pub mod codes;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod error;
pub mod id_token;
pub mod limits;
pub mod maps;
pub mod markup;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod pool;
pub mod push;
pub mod routes;
pub mod sandbox;
pub mod session;
pub mod shutdown;
pub mod signing;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod upgrade;
pub mod user_agent;
pub mod wechat;

#[cfg(test)]
mod untrusted;
