//! The relay over real HTTP, real WebSockets, a real Redis and the WeChat simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account_hook;
mod admin;
mod at_rest;
mod bad_input;
mod browser;
mod cli;
mod cluster;
mod codes;
mod concurrency;
mod contract;
mod faults;
mod floods;
mod helpers;
mod id_tokens;
mod login;
mod miniprogram_page;
mod multi_instance;
mod observability;
mod oidc;
mod pc_side;
mod processes;
mod simulator;
mod tenants;
mod website;
mod wechat_client;
