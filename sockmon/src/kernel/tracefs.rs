//! tracefs: where it is (mounting it when missing) and the record layout of
//! a tracepoint, read from its `format` file.
//!
//! The programs read tracepoint records at offsets taken from these files
//! rather than from constants, like every other kernel layout they use.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}")]
    Mount(io::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("tracepoint {tracepoint} has no field `{field}` in {path}")]
    MissingField {
        tracepoint: String,
        field: String,
        path: PathBuf,
    },
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, mounting tracefs at `/sys/kernel/tracing` if no
/// mount is found (aya attaches tracepoints through it too).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(found) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(found.to_path_buf());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(io::Error::last_os_error()));
    }
    Ok(PathBuf::from(CANDIDATES[0]))
}

/// Field offsets of one tracepoint record.
pub struct Format {
    tracepoint: String,
    path: PathBuf,
    fields: Vec<(String, u32)>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            tracepoint: format!("{category}:{name}"),
            path,
            fields: parse_fields(&text),
        })
    }

    /// Byte offset of `field` in the record.
    pub fn offset(&self, field: &str) -> Result<u32, TracefsError> {
        self.fields
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, o)| *o)
            .ok_or_else(|| TracefsError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: field.to_string(),
                path: self.path.clone(),
            })
    }
}

/// Parses lines like `\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;`.
fn parse_fields(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_prefix("field:")?.split(';').next()?;
            let name = decl.split_whitespace().last()?;
            let name = name.split('[').next()?.trim_start_matches('*');
            let offset = line
                .split(';')
                .find_map(|part| part.trim().strip_prefix("offset:"))?
                .parse()
                .ok()?;
            Some((name.to_string(), offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\nprint fmt: \"family=%s\"\n";

    #[test]
    fn parses_scalars_pointers_and_arrays() {
        let f = parse_fields(STATE);
        assert_eq!(
            f,
            vec![
                ("common_type".to_string(), 0),
                ("skaddr".to_string(), 8),
                ("oldstate".to_string(), 16),
                ("saddr_v6".to_string(), 40),
            ]
        );
    }

    #[test]
    fn parses_syscall_pointer_args() {
        let f = parse_fields("\tfield:struct sockaddr * umyaddr;\toffset:24;\tsize:8;\tsigned:0;");
        assert_eq!(f, vec![("umyaddr".to_string(), 24)]);
    }
}
