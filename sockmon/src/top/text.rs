//! Names as the screen shows them: untrusted bytes escaped for the
//! terminal, containers by their short id. Below every other part of the
//! view (the model names its rows with it, the renderer draws with it).

use crate::escape;

/// Escapes untrusted bytes (names) for the terminal.
pub fn shown(bytes: &[u8]) -> String {
    escape::for_terminal(bytes).into_owned()
}

/// A unit as people read it, escaped: a container by its short id
/// (`docker:0123456789ab`; the full id is in the JSON views).
pub fn unit_label(u: &str) -> String {
    match u.split_once(':') {
        Some((runtime, id)) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            shown(format!("{runtime}:{}", &id[..12]).as_bytes())
        }
        _ => shown(u.as_bytes()),
    }
}
