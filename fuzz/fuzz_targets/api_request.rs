//! Fuzzes the API's request parser: any bytes a client can send must give a
//! typed request or an error whose response is exactly one JSON line.
//! Run: `cargo +nightly fuzz run api_request` (in `fuzz/`). The corpus in
//! `fuzz/corpus/api_request` is replayed by the normal test suite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockmon::api::protocol::{Response, parse};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse(data) {
        let line = Response::error(&e).to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
    }
});
