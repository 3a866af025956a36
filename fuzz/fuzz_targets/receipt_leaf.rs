//! The receipt leaf decoder: a leaf it reads encodes back to the same bytes
//! (the format has one encoding per leaf).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = tlog::ReceiptLeaf::decode(data) {
        let encoded = leaf.encode().expect("a decoded leaf encodes");
        assert_eq!(encoded, data, "one encoding per leaf");
    }
});
