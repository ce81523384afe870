//! Free TCP ports on loopback for workers.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};

/// Picks a worker port: `preferred` if it is free, else the first free port from `start` that is
/// not in `taken` and can be bound on loopback right now.
pub fn pick_port(preferred: Option<u16>, start: u16, taken: &HashSet<u16>) -> Option<u16> {
    if let Some(port) = preferred
        && !taken.contains(&port)
        && port_is_free(port)
    {
        return Some(port);
    }
    (start..=u16::MAX).find(|p| !taken.contains(p) && port_is_free(*p))
}

/// Whether a TCP port can be bound on 127.0.0.1 now. Another process may take it before the
/// worker binds; the worker then fails to start and the retry picks another.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
