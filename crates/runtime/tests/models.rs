//! The runtime against the committed fixtures: outputs match onnxruntime's
//! within 1e-5, signatures are read right, and bad models are refused with
//! the reason.

use std::collections::BTreeMap;
use std::path::Path;

use domain::{Dim, Dtype, TensorSpec};
use proptest::prelude::*;
use runtime::{InputError, ModelError, ModelLimits, Signature, Tensor, TensorData, load_model};
use serde_json::Value;

const LIMITS: ModelLimits = ModelLimits { nodes_max: 10_000, initializer_bytes_max: 64 << 20, ..ModelLimits::TRUSTED };

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)).unwrap()
}

fn tensor_from_json(value: &Value) -> Tensor {
    let shape = value["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = value["data"].as_array().unwrap();
    let data = match value["dtype"].as_str().unwrap() {
        "f32" => TensorData::F32(data.iter().map(|v| v.as_f64().unwrap() as f32).collect()),
        "i64" => TensorData::I64(data.iter().map(|v| v.as_i64().unwrap()).collect()),
        other => panic!("fixture dtype {other}"),
    };
    Tensor { shape, data }
}

#[test]
fn fixtures_match_onnxruntime() {
    for name in ["linear", "mlp", "two_inputs", "embedding", "conv"] {
        let model = load_model(&fixture(&format!("{name}.onnx")), &LIMITS).unwrap();
        let expected: Value = serde_json::from_slice(&fixture(&format!("{name}.expected.json"))).unwrap();
        let inputs: BTreeMap<String, Tensor> =
            expected["inputs"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), tensor_from_json(v))).collect();
        let ordered = model.signature.check_inputs(inputs, 1_000_000).unwrap();
        let outputs = model.run(ordered, u64::MAX).unwrap();
        for (output_name, tensor) in outputs {
            let reference = tensor_from_json(&expected["outputs"][&output_name]);
            assert_eq!(tensor.shape, reference.shape, "{name}.{output_name}");
            let (TensorData::F32(actual), TensorData::F32(wanted)) = (&tensor.data, &reference.data) else {
                panic!("{name}.{output_name}: dtype")
            };
            for (a, w) in actual.iter().zip(wanted) {
                assert!((a - w).abs() <= 1e-5 * w.abs().max(1.0), "{name}.{output_name}: {a} vs {w}");
            }
        }
    }
}

#[test]
fn signatures_keep_symbolic_dimensions() {
    let model = load_model(&fixture("embedding.onnx"), &LIMITS).unwrap();
    let symbol = |s: &str| Dim::Symbol(s.to_owned());
    assert_eq!(
        model.signature.inputs,
        [TensorSpec { name: "ids".into(), dtype: Dtype::I64, shape: vec![symbol("N"), symbol("sequence")] }]
    );
    assert_eq!(model.signature.outputs[0].shape, [symbol("N"), symbol("sequence"), Dim::Fixed(4)]);
}

#[test]
fn bad_models_are_refused_with_the_reason() {
    let refuse = |bytes: &[u8], limits: &ModelLimits| load_model(bytes, limits).unwrap_err();
    assert!(matches!(refuse(b"", &LIMITS), ModelError::NotOnnx(_)));
    assert!(matches!(refuse(b"plain text, not protobuf", &LIMITS), ModelError::NotOnnx(_)));
    let conv = fixture("conv.onnx");
    for cut in [1, conv.len() / 3, conv.len() / 2, conv.len() - 1] {
        let error = refuse(&conv[..cut], &LIMITS);
        assert!(matches!(error, ModelError::NotOnnx(_) | ModelError::Rejected(_)), "cut at {cut}: {error:?}");
    }
    assert!(matches!(refuse(&fixture("external_data.onnx"), &LIMITS), ModelError::ExternalData(_)));
    assert_eq!(
        refuse(&fixture("unsupported_op.onnx"), &LIMITS),
        ModelError::UnsupportedOperators(vec!["ConcatFromSequence".into(), "SequenceConstruct".into()])
    );
    let small = ModelLimits { nodes_max: 2, initializer_bytes_max: 64, ..LIMITS };
    assert_eq!(refuse(&fixture("conv.onnx"), &small), ModelError::TooManyNodes { count: 5, limit: 2 });
    let tiny_weights = ModelLimits { nodes_max: 100, initializer_bytes_max: 64, ..LIMITS };
    assert!(matches!(refuse(&fixture("mlp.onnx"), &tiny_weights), ModelError::InitializersTooLarge { .. }));
}

fn spec(name: &str, dtype: Dtype, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec { name: name.into(), dtype, shape }
}

fn f32_tensor(shape: Vec<usize>) -> Tensor {
    let count = shape.iter().product();
    Tensor { shape, data: TensorData::F32(vec![0.0; count]) }
}

#[test]
fn input_checks_name_the_problem() {
    let n = || Dim::Symbol("N".into());
    let signature = Signature {
        inputs: vec![spec("a", Dtype::F32, vec![n(), Dim::Fixed(3)]), spec("b", Dtype::F32, vec![n(), Dim::Fixed(3)])],
        outputs: vec![],
    };
    let check = |pairs: Vec<(&str, Tensor)>| {
        signature.check_inputs(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), 100)
    };
    assert!(check(vec![("a", f32_tensor(vec![2, 3])), ("b", f32_tensor(vec![2, 3]))]).is_ok());
    assert!(matches!(check(vec![("a", f32_tensor(vec![2, 3]))]), Err(InputError::Missing { .. })));
    assert!(matches!(
        check(vec![("a", f32_tensor(vec![2, 3])), ("b", f32_tensor(vec![2, 3])), ("c", f32_tensor(vec![1]))]),
        Err(InputError::Unknown { .. })
    ));
    assert!(matches!(
        check(vec![("a", f32_tensor(vec![2, 3])), ("b", f32_tensor(vec![1, 3]))]),
        Err(InputError::Dimension { axis: 0, .. })
    ));
    assert!(matches!(
        check(vec![("a", f32_tensor(vec![2, 4])), ("b", f32_tensor(vec![2, 4]))]),
        Err(InputError::Dimension { axis: 1, .. })
    ));
    assert!(matches!(
        check(vec![("a", f32_tensor(vec![6])), ("b", f32_tensor(vec![2, 3]))]),
        Err(InputError::Rank { .. })
    ));
    let wrong_count = Tensor { shape: vec![2, 3], data: TensorData::F32(vec![0.0; 5]) };
    assert!(matches!(
        check(vec![("a", wrong_count), ("b", f32_tensor(vec![2, 3]))]),
        Err(InputError::ElementCount { .. })
    ));
    let ints = Tensor { shape: vec![1, 3], data: TensorData::I64(vec![0; 3]) };
    assert!(matches!(check(vec![("a", ints), ("b", f32_tensor(vec![1, 3]))]), Err(InputError::Dtype { .. })));
    assert!(matches!(
        check(vec![("a", f32_tensor(vec![20, 3])), ("b", f32_tensor(vec![20, 3]))]),
        Err(InputError::TooManyElements { given: 120, limit: 100 })
    ));
    // Empty, yet its other size would reach the model: its zeros count as ones.
    assert!(check(vec![("a", f32_tensor(vec![0, 3])), ("b", f32_tensor(vec![0, 3]))]).is_ok());
    let empty_but_vast = |n: usize| Tensor { shape: vec![0, n], data: TensorData::F32(vec![]) };
    let symbolic =
        Signature { inputs: vec![spec("x", Dtype::F32, vec![n(), Dim::Symbol("S".into())])], outputs: vec![] };
    for vast in [101, 1 << 62, usize::MAX] {
        let refused = symbolic.check_inputs(BTreeMap::from([("x".to_owned(), empty_but_vast(vast))]), 100);
        assert!(matches!(&refused, Err(InputError::ShapeTooLarge { limit: 100, .. })), "{vast}: {refused:?}");
    }
    assert!(symbolic.check_inputs(BTreeMap::from([("x".to_owned(), empty_but_vast(100))]), 100).is_ok());

    // A symbol that names nothing ("?", as paddle2onnx writes an unknown
    // size; PaddleOCR's classifier takes x: [-1, 3, ?, ?]) binds nothing,
    // where a named one binds every dimension it names.
    let unknown = || Dim::Symbol("?".into());
    let ocr = Signature {
        inputs: vec![spec("x", Dtype::F32, vec![n(), Dim::Fixed(3), unknown(), unknown()])],
        outputs: vec![],
    };
    let image = |h: usize, w: usize| BTreeMap::from([("x".to_owned(), f32_tensor(vec![1, 3, h, w]))]);
    assert!(ocr.check_inputs(image(48, 192), 100_000).is_ok());
    let named = Signature {
        inputs: vec![spec("x", Dtype::F32, vec![n(), Dim::Fixed(3), Dim::Symbol("S".into()), Dim::Symbol("S".into())])],
        outputs: vec![],
    };
    assert!(matches!(named.check_inputs(image(48, 192), 100_000), Err(InputError::Dimension { axis: 3, .. })));
    assert!(named.check_inputs(image(48, 48), 100_000).is_ok());
}

#[test]
fn what_a_model_declares_is_bounded_named_once_and_in_short_names() {
    use runtime::synthetic::with_signature;
    let load = |bytes: Vec<u8>| load_model(&bytes, &LIMITS);
    let loaded = load(with_signature(&["x", "mask"], &["y", "z"], 3)).unwrap();
    assert_eq!(loaded.signature.inputs.len(), 2);
    assert_eq!(loaded.signature.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["y", "z"]);

    // As many as the limits allow loads; one more is refused, naming the setting.
    let names: Vec<String> = (0..LIMITS.inputs_max + 1).map(|i| format!("x{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(load(with_signature(&names[..LIMITS.inputs_max], &["y"], 2)).is_ok());
    let error = load(with_signature(&names, &["y"], 2)).unwrap_err();
    assert_eq!(
        error,
        ModelError::TooManyTensors { what: "inputs", count: 257, limit: 256, setting: "model_inputs_max" }
    );
    assert!(error.to_string().contains("model_inputs_max = 256"), "{error}");
    let error = load(with_signature(&["x"], &names, 2)).unwrap_err();
    assert!(matches!(error, ModelError::TooManyTensors { what: "outputs", setting: "model_outputs_max", .. }));

    // Names: 255 bytes are fine, 256 are not, for inputs and outputs alike.
    let (fits, too_long) = ("n".repeat(255), "n".repeat(256));
    assert!(load(with_signature(&[&fits], &[&format!("o{}", &fits[1..])], 2)).is_ok());
    for bytes in [with_signature(&[&too_long], &["y"], 2), with_signature(&["x"], &[&too_long], 2)] {
        let error = load(bytes).unwrap_err();
        assert!(matches!(&error, ModelError::NameTooLong { bytes: 256, .. }), "{error:?}");
        assert!(error.to_string().contains("longer than 255 bytes"), "{error}");
    }

    // An output listed twice would answer one tensor for two digests.
    let error = load(with_signature(&["x"], &["y", "z", "y"], 2)).unwrap_err();
    assert_eq!(error, ModelError::DuplicateName { what: "output", name: "y".into() });
    let error = load(with_signature(&["x", "x"], &["y"], 2)).unwrap_err();
    assert_eq!(error, ModelError::DuplicateName { what: "input", name: "x".into() });

    // Ranks are bounded too.
    assert!(load(with_signature(&["x"], &["y"], LIMITS.rank_max)).is_ok());
    let error = load(with_signature(&["x"], &["y"], LIMITS.rank_max + 1)).unwrap_err();
    assert!(matches!(error, ModelError::RankTooLarge { what: "input", rank: 17, limit: 16, .. }), "{error:?}");
}

proptest! {
    /// Whatever shape a caller claims, the check never panics, and a shape it
    /// accepts always has exactly as many elements as the data.
    #[test]
    fn input_check_is_total(shape in proptest::collection::vec(0usize..1 << 20, 0..5), len in 0usize..64) {
        let signature = Signature { inputs: vec![spec("x", Dtype::F32, vec![Dim::Symbol("N".into()), Dim::Fixed(4)])], outputs: vec![] };
        let tensor = Tensor { shape: shape.clone(), data: TensorData::F32(vec![0.0; len]) };
        let given = BTreeMap::from([("x".to_owned(), tensor)]);
        if signature.check_inputs(given, 1_000_000).is_ok() {
            prop_assert_eq!(shape.iter().product::<usize>(), len);
            prop_assert_eq!(shape.len(), 2);
            prop_assert_eq!(shape[1], 4);
        }
    }
}

#[test]
fn the_cache_keeps_models_within_its_byte_budget_least_recently_used_first_out() {
    use std::sync::Arc;

    use domain::Sha256;
    use runtime::ModelCache;

    let linear = Arc::new(load_model(&fixture("linear.onnx"), &LIMITS).unwrap());
    let mlp = Arc::new(load_model(&fixture("mlp.onnx"), &LIMITS).unwrap());
    let conv = Arc::new(load_model(&fixture("conv.onnx"), &LIMITS).unwrap());
    let (a, b, c) = (Sha256::digest(b"linear"), Sha256::digest(b"mlp"), Sha256::digest(b"conv"));
    // Room for two of the three.
    let cache = ModelCache::new(linear.cost_bytes + mlp.cost_bytes + conv.cost_bytes - 1);
    assert_eq!(cache.insert(a, linear.clone()), vec![]);
    assert_eq!(cache.insert(b, mlp.clone()), vec![]);
    assert!(cache.get(&a).is_some(), "touch linear: mlp is now the least recently used");
    assert_eq!(cache.insert(c, conv.clone()), vec![b], "the insert names what it evicted");
    assert!(cache.get(&b).is_none(), "mlp was evicted");
    assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
    assert_eq!(cache.usage(), (2, linear.cost_bytes + conv.cost_bytes));
    // A model larger than the whole budget is not kept, and evicts nothing.
    let tiny = ModelCache::new(1);
    assert_eq!(tiny.insert(a, linear), vec![a], "not kept");
    assert_eq!(tiny.usage(), (0, 0));
}

proptest! {
    /// Calls stacked into one batch and the batch's rows split back give
    /// each call its own tensor, whatever the rows and the other dimensions.
    #[test]
    fn rows_stacked_then_split_are_each_calls_own(
        rows in proptest::collection::vec(0usize..4, 1..6),
        inner in proptest::collection::vec(1usize..4, 0..3),
    ) {
        let per_row: usize = inner.iter().product();
        let mut next = 0i64;
        let calls: Vec<Tensor> = rows
            .iter()
            .map(|&r| {
                let data = (0..r * per_row).map(|_| { next += 1; next }).collect();
                Tensor { shape: [vec![r], inner.clone()].concat(), data: TensorData::I64(data) }
            })
            .collect();
        let batch = runtime::stack_rows(&calls).unwrap();
        prop_assert_eq!(batch.shape[0], rows.iter().sum::<usize>());
        prop_assert_eq!(batch.clone().split_rows(&rows).unwrap(), calls);
        // Rows that do not add up to the batch, and parts that do not fit.
        let mut more = rows.clone();
        more.push(1);
        prop_assert!(batch.split_rows(&more).is_none());
    }
}

#[test]
fn only_tensors_alike_but_for_their_rows_stack() {
    let f32s = |shape: Vec<usize>| {
        let count = shape.iter().product();
        Tensor { shape, data: TensorData::F32(vec![0.5; count]) }
    };
    assert!(runtime::stack_rows(&[f32s(vec![1, 3]), f32s(vec![2, 3])]).is_some());
    assert!(runtime::stack_rows(&[f32s(vec![1, 3]), f32s(vec![1, 4])]).is_none());
    assert!(runtime::stack_rows(&[f32s(vec![1, 3]), f32s(vec![1, 3, 1])]).is_none());
    assert!(runtime::stack_rows(&[f32s(vec![]), f32s(vec![])]).is_none());
    let ints = Tensor { shape: vec![1, 3], data: TensorData::I64(vec![1, 2, 3]) };
    assert!(runtime::stack_rows(&[f32s(vec![1, 3]), ints]).is_none());
}
