//! Rendering events for people (aligned text) and programs (NDJSON).

/// Escaping of untrusted bytes is a leaf below the engine (its views
/// escape names too); it is re-exported here, where the renderers use it.
pub use crate::escape;
pub mod human;
pub mod json;
pub mod sockets;
pub mod units;

use crate::event::Event;

/// Output format of `watch` and the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Appends `e` to `out` in `format`.
pub fn write_event(format: Format, out: &mut Vec<u8>, e: &Event) {
    match format {
        Format::Human => human::write_event(out, e),
        Format::Json => json::write_event(out, e),
    }
}
