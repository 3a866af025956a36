//! Signed notes and checkpoints as an auditor reads them from a log it does
//! not trust: the note's signatures against a verifier, then the checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let key = tlog::NoteKey::from_seed("fuzz.example/log", &[7; 32]).expect("a key");
    let _ = key.verifier().verify_note(text);
    if let Ok(checkpoint) = tlog::Checkpoint::parse(text) {
        // What parses prints back to a body that parses the same.
        let again = tlog::Checkpoint::parse(&checkpoint.body()).expect("a body it wrote parses");
        assert_eq!(again.body(), checkpoint.body());
    }
});
