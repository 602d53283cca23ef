//! weir: a reverse-proxy load balancer.
#![forbid(unsafe_code)]

pub mod balance;
pub mod config;
pub mod routing;
