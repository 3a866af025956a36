//! The binary tensor body (safetensors): whatever it reads must write back
//! to a body that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = server::parsers::tensor_body(data) {
        let parts = tensors.iter().map(|(name, t)| (name.as_str(), t.shape.as_slice(), &t.data));
        let written = server::parsers::write_tensor_body(parts);
        let again = server::parsers::tensor_body(&written).expect("a body it wrote reads back");
        assert_eq!(again.len(), tensors.len());
        for (name, tensor) in &tensors {
            let (mut a, mut b) = (vec![], vec![]);
            tensor.write_le(&mut a);
            again[name].write_le(&mut b);
            assert_eq!((&tensor.shape, a), (&again[name].shape, b));
        }
    }
});
