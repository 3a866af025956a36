//! C2SP tlog-proofs as `vitrine receipt verify` reads them from a file it
//! does not trust, and tile paths as the server reads them from a URL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(proof) = tlog::TlogProof::parse(text) {
        // What parses writes back to a proof that parses the same.
        assert_eq!(tlog::TlogProof::parse(&proof.encode()).as_ref(), Ok(&proof));
        if let Some(extra) = &proof.extra {
            let _ = tlog::proof::split_receipt_extra(extra);
        }
    }
    let _ = server::parsers::tile_path(text);
});
