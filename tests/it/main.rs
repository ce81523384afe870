//! Integration tests: one binary, each test with a real `hub serve` in its own temp directory,
//! real built-in workers on real loopback ports, and real file saves.

mod support;

mod api;
mod budget;
mod cli;
mod dashboard;
mod diff_apply;
mod docs;
mod e2e;
mod engines;
mod faults;
mod gateway;
mod golden;
mod hostile;
mod lifecycle;
mod measure;
mod misbehave;
mod openai;
mod security;
mod validate;
mod watch;
