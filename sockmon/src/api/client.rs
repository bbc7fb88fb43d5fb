//! A blocking client of the daemon's API, for the CLI (`ls`, `lookup`,
//! `status`, `watch` and `top` when a daemon runs). Its methods mirror
//! `EngineHandle`'s (`lookup`, `list`, `status`, `subscribe`) and send the
//! same typed [`Request`] the server parses. (`top` reads its `counters` and
//! `subscribe` streams itself: it switches between them with a read timeout.)

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use thiserror::Error;

use super::protocol::{Request, Response};
use crate::{
    engine::stats::Status,
    filter::Filter,
    view::{Lookup, SocketView},
};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no daemon is listening on {0}")]
    NoDaemon(String),
    #[error(
        "cannot reach the daemon at {path}: {source} (are you root or in the `sockmon` group?)"
    )]
    Denied { path: String, source: io::Error },
    #[error("talking to the daemon failed: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon sent an invalid response: {0}")]
    Invalid(String),
    #[error("the daemon refused the request ({code}): {message}")]
    Refused { code: String, message: String },
}

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon at `path`. `NoDaemon` when nothing listens there.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NoDaemon(shown.clone())
            }
            io::ErrorKind::PermissionDenied => ClientError::Denied {
                path: shown.clone(),
                source: e,
            },
            _ => ClientError::Io(e),
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// The sockets matching `query` (usually one).
    pub fn lookup(&mut self, query: Lookup) -> Result<Vec<SocketView>, ClientError> {
        Ok(self
            .request(&Request::Lookup(query))?
            .sockets
            .unwrap_or_default())
    }

    /// The live table, filtered.
    pub fn list(&mut self, filter: Filter) -> Result<Vec<SocketView>, ClientError> {
        Ok(self
            .request(&Request::List(filter))?
            .sockets
            .unwrap_or_default())
    }

    /// The daemon's status.
    pub fn status(&mut self) -> Result<Status, ClientError> {
        self.request(&Request::Status)?
            .status
            .ok_or_else(|| ClientError::Invalid("the daemon's answer had no status".into()))
    }

    /// Turns this connection into the event stream (read it with
    /// [`Client::next_line`]).
    pub fn subscribe(&mut self, filter: Filter) -> Result<(), ClientError> {
        self.request(&Request::Subscribe(filter)).map(drop)
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.writer.write_all(&request.to_line())?;
        let response = self.read_line()?;
        let r: Response = serde_json::from_str(&response)
            .map_err(|e| ClientError::Invalid(format!("{e}: {response}")))?;
        if !r.ok {
            return Err(ClientError::Refused {
                code: r.code.unwrap_or_default(),
                message: r.error.unwrap_or_default(),
            });
        }
        Ok(r)
    }

    /// The connection's descriptor (to shut it down from a signal handler).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd as _;
        self.writer.as_raw_fd()
    }

    /// After a `subscribe`, the next line of the stream (`None` at its end).
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        self.reader.get_ref().set_read_timeout(None)?;
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Ok(None),
            _ => Ok(Some(line)),
        }
    }

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Invalid(
                "the daemon closed the connection".into(),
            ));
        }
        Ok(line)
    }
}
