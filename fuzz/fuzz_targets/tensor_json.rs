//! An inference request's JSON body, read as the server reads it: the
//! request's shape, then each tensor's data as its declared dtype.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = server::parsers::infer_json(data);
});
