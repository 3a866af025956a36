//! An uploaded file, as the worker validates it: inspection of the ONNX
//! protobuf under the model limits, then tract's load and optimisation.
//! Any answer is fine; a crash, a hang or a runaway allocation is not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // `load_model` turns tract's panics into errors; libFuzzer's hook
        // would abort on them before that. Panics it does not catch still
        // abort (libfuzzer-sys checks every input's run).
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let limits = runtime::ModelLimits { nodes_max: 1000, initializer_bytes_max: 16 << 20 };
        let _ = runtime::load_model(data, &limits);
    }
);
