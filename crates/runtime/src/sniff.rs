//! Whether an upload's first bytes can begin a model: an ONNX `ModelProto`
//! or a tar archive of one. Judged on the bytes as they arrive, before the
//! rest of the upload is read, so a stranger's garbage is refused at once
//! rather than after gigabytes. Pure: no runtime, no allocation.
//!
//! A `ModelProto` is a protobuf message; serializers write its fields in
//! the order of their numbers, `ir_version` (field 1) first. The walk reads
//! top-level fields until it finds `ir_version` (then: a model), and
//! refuses a field ONNX does not define, a wire type that does not fit its
//! field, a length past the end of the upload, or an `ir_version` ONNX has
//! never had. It undecides while it has too few bytes to tell.

use crate::archive::is_archive;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    Model,
    Archive,
    /// Not enough bytes yet to tell.
    Undecided,
}

/// The most bytes worth reading before deciding: past them, the upload goes
/// on and the runtime judges it whole.
pub const SNIFF_BYTES_MAX: usize = 64 << 10;

/// The highest `ir_version` accepted (ONNX is at 11; room to grow).
const IR_VERSION_MAX: u64 = 64;

/// An upload's first bytes that are neither an ONNX model nor a tar archive
/// of one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ONNX model nor a tar archive of one: {0}")]
pub struct NotAModel(pub String);

/// Judges `prefix`, the first bytes of an upload of `total` bytes (when
/// known); `Err` names why they cannot begin a model.
pub fn sniff(prefix: &[u8], total: Option<u64>) -> Result<Sniff, NotAModel> {
    if is_archive(prefix) {
        return Ok(Sniff::Archive);
    }
    let complete = total.is_some_and(|total| total <= prefix.len() as u64);
    let refuse = |why: String| Err(NotAModel(why));
    let undecided_or = |why: &str| {
        // A tar header's magic is at 257: a shorter prefix may still be one.
        if complete { refuse(why.to_owned()) } else { Ok(Sniff::Undecided) }
    };
    let mut at = 0usize;
    loop {
        if at >= prefix.len() {
            return undecided_or("the file ends before its ir_version");
        }
        let Some((tag, after)) = varint(&prefix[at..]) else { return undecided_or("the file ends in a field's tag") };
        let field = tag >> 3;
        let wire = tag & 7;
        let expected = match field {
            1 | 5 => 0,
            2 | 3 | 4 | 6 | 7 | 8 | 14 | 20 | 25 | 26 => 2,
            _ if prefix.len() < 262 && !complete => return Ok(Sniff::Undecided),
            _ => return refuse(format!("its byte {at} starts field {field}, which an ONNX model does not have")),
        };
        if wire != expected {
            if prefix.len() < 262 && !complete {
                return Ok(Sniff::Undecided);
            }
            return refuse(format!("its field {field} at byte {at} has wire type {wire}, not {expected}"));
        }
        at += after;
        let Some((value, after)) = varint(&prefix[at..]) else { return undecided_or("the file ends in a field") };
        at += after;
        if field == 1 {
            if (1..=IR_VERSION_MAX).contains(&value) {
                return Ok(Sniff::Model);
            }
            return refuse(format!("its ir_version is {value}"));
        }
        if expected == 2 {
            let end = (at as u64).saturating_add(value);
            if total.is_some_and(|total| end > total) {
                return refuse(format!("its field {field} at byte {at} is {value} bytes long, past the file's end"));
            }
            let available = &prefix[at..usize::try_from(end).unwrap_or(usize::MAX).min(prefix.len())];
            if let Err(why) = check_contents(field, available) {
                return refuse(format!("its field {field} at byte {at} {why}"));
            }
            match usize::try_from(end) {
                Ok(end) if end <= prefix.len() => at = end,
                _ => return Ok(Sniff::Undecided),
            }
        }
    }
}

/// What is there of a length-delimited field: text fields hold UTF-8 (a
/// character may be cut at the end of what is there), message fields
/// start with a tag of a wire type protobuf has.
fn check_contents(field: u64, available: &[u8]) -> Result<(), &'static str> {
    match field {
        2 | 3 | 4 | 6 => match std::str::from_utf8(available) {
            Err(error) if error.error_len().is_some() => Err("is text that is not UTF-8"),
            _ => Ok(()),
        },
        _ => match varint(available) {
            Some((tag, _)) if tag >> 3 == 0 || matches!(tag & 7, 3 | 4 | 6 | 7) => Err("is not a protobuf message"),
            _ => Ok(()),
        },
    }
}

/// A protobuf varint at the start of `bytes`, and its length; `None` if
/// `bytes` end inside it (or it is longer than ten bytes).
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Result<Sniff, NotAModel> {
        sniff(bytes, Some(bytes.len() as u64))
    }

    #[test]
    fn models_and_archives_pass_and_garbage_is_refused_from_its_first_bytes() {
        // A model as serializers write it: ir_version first.
        assert_eq!(whole(&[0x08, 0x08, 0x12, 0x01, b'x']), Ok(Sniff::Model));
        // Fields before it, in another order, are fine when ONNX has them.
        assert_eq!(whole(&[0x12, 0x02, b'p', b't', 0x28, 0x03, 0x08, 0x0a]), Ok(Sniff::Model));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(whole(&tar), Ok(Sniff::Archive));

        let text = whole(b"this is not an ONNX model at all").unwrap_err().to_string();
        assert!(text.contains("not an ONNX model"), "{text}");
        assert!(whole(&[]).is_err());
        assert!(whole(&[0x08, 0x00]).unwrap_err().0.contains("ir_version is 0"));
        assert!(whole(&[0x08, 0xe8, 0x07]).unwrap_err().0.contains("ir_version is 1000"));
        // A length past the end of the upload.
        assert!(sniff(&[0x3a, 0xff, 0x7f], Some(100)).unwrap_err().0.contains("past the file's end"));
        // A field ONNX does not have, or the wrong wire type for its field.
        let bytes = [0x98, 0x01, 0x00];
        assert!(sniff(&bytes, Some(1 << 20)).is_ok(), "too few bytes to tell it from a tar");
        let mut long = vec![0x98, 0x01];
        long.resize(300, 0);
        assert!(sniff(&long, Some(1 << 20)).unwrap_err().0.contains("field 19"));
        let mut wrong = vec![0x3d];
        wrong.resize(300, 0);
        assert!(sniff(&wrong, Some(1 << 20)).unwrap_err().0.contains("wire type 5, not 2"));
    }

    #[test]
    fn a_prefix_too_short_to_tell_waits_for_more() {
        // The graph starts and goes on past the prefix: more is needed.
        assert_eq!(sniff(&[0x3a, 0x80, 0x08, 0x0a, 0x05, b'n'], Some(1 << 20)), Ok(Sniff::Undecided));
        assert_eq!(sniff(&[0x08], None), Ok(Sniff::Undecided));
        assert_eq!(sniff(&[], None), Ok(Sniff::Undecided));
    }

    #[test]
    fn every_fixture_model_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap().chain(std::fs::read_dir(root.join("hostile")).unwrap()) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "onnx") {
                let bytes = std::fs::read(&path).unwrap();
                let prefix = &bytes[..bytes.len().min(SNIFF_BYTES_MAX)];
                assert_eq!(sniff(prefix, Some(bytes.len() as u64)), Ok(Sniff::Model), "{path:?}");
                seen += 1;
            }
        }
        assert!(seen > 20, "{seen} models");
    }

    #[test]
    fn random_bytes_are_refused_within_a_few_kilobytes() {
        // A fixed stream of pseudo-random bytes, as a stranger would send.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut refused_early = 0;
        for _ in 0..1000 {
            let bytes: Vec<u8> = (0..SNIFF_BYTES_MAX)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if sniff(&bytes[..4096], Some(1 << 30)).is_err() {
                refused_early += 1;
            }
        }
        assert!(refused_early >= 990, "{refused_early} of 1000 refused from their first 4 KiB");
    }
}
