//! The web dashboard's presentation, as pure functions from figures the API
//! already gives to HTML: the page frame and its Content-Security-Policy
//! (`layout`), SVG charts with axes, tooltips and tables (`chart`), number
//! formats (`format`), creators' Markdown cards, sanitized (`markdown`), and
//! the static files the pages load, embedded (`assets`).
//!
//! This crate knows nothing about HTTP, SQL or the API's routes: the server's
//! `pages` module fetches the figures (through the same functions as the
//! API's routes) and composes them with these pieces.

pub mod assets;
pub mod chart;
pub mod format;
pub mod layout;
pub mod markdown;

pub use maud::{Markup, PreEscaped};
