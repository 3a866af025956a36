//! Small, real ONNX models written from code: for the demo market and for
//! tests that need many distinct models. Each is a valid ONNX file that
//! [`crate::load_model`] accepts, with weights drawn from a seed, so two
//! seeds give two different files.

use domain::Task;
use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, tensor_proto::DataType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};

/// A generated model and what a call to it needs.
#[derive(Debug, Clone)]
pub struct SyntheticModel {
    pub bytes: Vec<u8>,
    /// The input's name, dtype and per-row width (after the batch dimension `N`).
    pub input: String,
    pub dtype: &'static str,
    pub width: usize,
    /// For integer inputs: values must be below this.
    pub vocabulary: Option<usize>,
}

/// A deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low) as u64) as usize
    }

    fn weights(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| (self.unit() * 2.0 - 1.0) as f32).collect()
    }
}

/// A small model for `task`, its weights from `seed`.
pub fn model_for_task(task: Task, seed: u64) -> SyntheticModel {
    let mut rng = Seeded::new(seed);
    let width = rng.range(3, 17);
    let (nodes, initializers, input_type, output, vocabulary) = match task {
        Task::Embedding => {
            let (vocabulary, dims) = (rng.range(16, 64), rng.range(4, 17));
            let nodes = vec![node("Gather", &["table", "x"], "y", &[("axis", 0)])];
            (
                nodes,
                vec![tensor("table", &[vocabulary, dims], rng.weights(vocabulary * dims))],
                DataType::Int64,
                dims,
                Some(vocabulary),
            )
        }
        Task::Classification => {
            let classes = rng.range(2, 6);
            let nodes =
                vec![node("Gemm", &["x", "w", "b"], "logits", &[]), node("Softmax", &["logits"], "y", &[("axis", 1)])];
            let weights = vec![
                tensor("w", &[width, classes], rng.weights(width * classes)),
                tensor("b", &[classes], rng.weights(classes)),
            ];
            (nodes, weights, DataType::Float, classes, None)
        }
        other => {
            let outputs = match other {
                Task::Regression => 1,
                Task::Detection => 4,
                Task::Segmentation => width,
                _ => rng.range(1, 8),
            };
            let activation = match other {
                Task::Detection | Task::Segmentation => Some("Sigmoid"),
                Task::Generation => Some("Tanh"),
                Task::Other => Some("Relu"),
                _ => None,
            };
            let mut nodes = vec![node("MatMul", &["x", "w"], "xw", &[]), node("Add", &["xw", "b"], "z", &[])];
            let last = match activation {
                Some(op) => {
                    nodes.push(node(op, &["z"], "y", &[]));
                    "y"
                }
                None => "z",
            };
            if last == "z" {
                nodes.last_mut().expect("two nodes").output = vec!["y".into()];
            }
            let weights = vec![
                tensor("w", &[width, outputs], rng.weights(width * outputs)),
                tensor("b", &[outputs], rng.weights(outputs)),
            ];
            (nodes, weights, DataType::Float, outputs, None)
        }
    };
    let graph = GraphProto {
        name: format!("{}-{seed}", task.as_str()),
        node: nodes,
        initializer: initializers,
        input: vec![value_info("x", input_type, &[None, Some(width)])],
        output: vec![value_info(
            "y",
            DataType::Float,
            &[None, if task == Task::Embedding { None } else { Some(output) }],
        )],
        ..GraphProto::default()
    };
    let graph = if task == Task::Embedding {
        // Gather adds the embedding dimension after the input's two.
        GraphProto { output: vec![value_info("y", DataType::Float, &[None, Some(width), Some(output)])], ..graph }
    } else {
        graph
    };
    SyntheticModel {
        bytes: encode(graph),
        input: "x".into(),
        dtype: if task == Task::Embedding { "i64" } else { "f32" },
        width,
        vocabulary,
    }
}

/// A multilayer perceptron `widths[0] → widths[1] → … → widths[last]`
/// (MatMul, Add, and Relu between layers), its weights from `seed`: a model
/// whose cost per call is chosen by its widths (about `Σ wᵢ·wᵢ₊₁`
/// multiply-adds per row), for benchmarks that need milliseconds per call.
pub fn mlp(widths: &[usize], seed: u64) -> SyntheticModel {
    assert!(widths.len() >= 2, "an MLP has an input and an output width");
    let mut rng = Seeded::new(seed);
    let mut nodes = vec![];
    let mut initializers = vec![];
    let mut input = "x".to_string();
    let layers = widths.len() - 1;
    for (layer, pair) in widths.windows(2).enumerate() {
        let (w, b) = (format!("w{layer}"), format!("b{layer}"));
        // Weights scaled by 1/√fan-in keep activations finite through the layers.
        let scale = 1.0 / (pair[0] as f32).sqrt();
        let weights = rng.weights(pair[0] * pair[1]).into_iter().map(|v| v * scale).collect();
        initializers.push(tensor(&w, &[pair[0], pair[1]], weights));
        initializers.push(tensor(&b, &[pair[1]], rng.weights(pair[1])));
        let (product, sum) = (format!("xw{layer}"), format!("z{layer}"));
        nodes.push(node("MatMul", &[&input, &w], &product, &[]));
        let last = layer + 1 == layers;
        nodes.push(node("Add", &[&product, &b], if last { "y" } else { &sum }, &[]));
        if !last {
            let activated = format!("h{layer}");
            nodes.push(node("Relu", &[&sum], &activated, &[]));
            input = activated;
        }
    }
    let graph = GraphProto {
        name: format!("mlp-{seed}"),
        node: nodes,
        initializer: initializers,
        input: vec![value_info("x", DataType::Float, &[None, Some(widths[0])])],
        output: vec![value_info("y", DataType::Float, &[None, Some(widths[layers])])],
        ..GraphProto::default()
    };
    SyntheticModel { bytes: encode(graph), input: "x".into(), dtype: "f32", width: widths[0], vocabulary: None }
}

/// A model with exactly the signature asked for, to test what a model may
/// declare: `inputs` of f32 and `rank` dimensions each (the first the
/// symbolic batch `N`, the others 1), and graph outputs named `outputs` in
/// order, each distinct name the Identity of the first input (a name listed
/// twice is one value listed twice, as an exporter may write it).
pub fn with_signature(inputs: &[&str], outputs: &[&str], rank: usize) -> Vec<u8> {
    assert!(!inputs.is_empty() && rank >= 1, "a model with a signature has an input of rank 1 or more");
    let dims: Vec<Option<usize>> = std::iter::once(None).chain(std::iter::repeat_n(Some(1), rank - 1)).collect();
    let mut nodes: Vec<NodeProto> = vec![];
    for &output in outputs {
        if !nodes.iter().any(|node| node.output[0] == output) {
            nodes.push(node("Identity", &[inputs[0]], output, &[]));
        }
    }
    let graph = GraphProto {
        name: "signature".into(),
        node: nodes,
        input: inputs.iter().map(|name| value_info(name, DataType::Float, &dims)).collect(),
        output: outputs.iter().map(|name| value_info(name, DataType::Float, &dims)).collect(),
        ..GraphProto::default()
    };
    encode(graph)
}

/// Moves every initializer of an ONNX file into one external data file named
/// `location` (the ONNX external-data layout: `location`, `offset` and
/// `length` on each tensor). Returns the new `.onnx` file and the data file,
/// which must sit beside it, as in a model archive.
pub fn with_external_data(model: &[u8], location: &str) -> (Vec<u8>, Vec<u8>) {
    let mut model = ModelProto::decode(model).expect("a generated model decodes");
    let mut data = vec![];
    let graph = model.graph.as_mut().expect("a generated model has a graph");
    for tensor in &mut graph.initializer {
        let offset = data.len();
        for value in std::mem::take(&mut tensor.float_data) {
            data.extend_from_slice(&value.to_le_bytes());
        }
        data.append(&mut std::mem::take(&mut tensor.raw_data));
        let entry = |key: &str, value: String| pb::StringStringEntryProto { key: key.into(), value };
        tensor.external_data = vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", (data.len() - offset).to_string()),
        ];
        tensor.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    }
    (model.encode_to_vec(), data)
}

/// The ONNX file of `graph` (opset 17).
fn encode(graph: GraphProto) -> Vec<u8> {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        producer_name: "vitrine-synthetic".into(),
        graph: Some(graph),
        ..ModelProto::default()
    };
    model.encode_to_vec()
}

fn node(op: &str, inputs: &[&str], output: &str, ints: &[(&str, i64)]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}-{output}"),
        attribute: ints
            .iter()
            .map(|&(name, value)| AttributeProto {
                name: name.into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: value,
                ..AttributeProto::default()
            })
            .collect(),
        ..NodeProto::default()
    }
}

fn tensor(name: &str, dims: &[usize], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..TensorProto::default()
    }
}

/// `None` dimensions are the symbolic batch `N`.
fn value_info(name: &str, dtype: DataType, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(size) => dimension::Value::DimValue(*size as i64),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dtype as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelLimits, Tensor, TensorData, load_model};

    #[test]
    fn every_task_gives_a_model_that_loads_and_runs() {
        let limits = ModelLimits { nodes_max: 100, initializer_bytes_max: 1 << 20, ..ModelLimits::TRUSTED };
        for task in Task::ALL {
            for seed in 0..3 {
                let synthetic = model_for_task(task, seed);
                let model = load_model(&synthetic.bytes, &limits).unwrap_or_else(|e| panic!("{task}: {e}"));
                let data = match synthetic.vocabulary {
                    Some(v) => TensorData::I64((0..2 * synthetic.width).map(|i| (i % v) as i64).collect()),
                    None => TensorData::F32(vec![0.5; 2 * synthetic.width]),
                };
                let outputs = model.run(vec![Tensor { shape: vec![2, synthetic.width], data }], u64::MAX).unwrap();
                assert_eq!(outputs[0].1.shape[0], 2, "{task}");
            }
        }
        assert_ne!(model_for_task(Task::Regression, 1).bytes, model_for_task(Task::Regression, 2).bytes);
    }

    /// The generated MLP computes what its weights say: checked against a
    /// plain matrix product written here from the same generator.
    #[test]
    fn an_mlp_computes_relu_layers_of_its_weights() {
        let widths = [5, 7, 3];
        let synthetic = mlp(&widths, 9);
        let limits = ModelLimits { nodes_max: 100, initializer_bytes_max: 1 << 20, ..ModelLimits::TRUSTED };
        let model = load_model(&synthetic.bytes, &limits).expect("the MLP loads");
        let x: Vec<f32> = (0..5).map(|i| i as f32 / 5.0 - 0.4).collect();
        let outputs = model.run(vec![Tensor { shape: vec![1, 5], data: TensorData::F32(x.clone()) }], u64::MAX);
        let TensorData::F32(y) = &outputs.expect("it runs")[0].1.data else { panic!("f32 out") };
        let mut rng = Seeded::new(9);
        let mut h = x;
        for (layer, pair) in widths.windows(2).enumerate() {
            let scale = 1.0 / (pair[0] as f32).sqrt();
            let w: Vec<f32> = rng.weights(pair[0] * pair[1]).into_iter().map(|v| v * scale).collect();
            let b = rng.weights(pair[1]);
            let mut next: Vec<f32> =
                (0..pair[1]).map(|j| b[j] + (0..pair[0]).map(|i| h[i] * w[i * pair[1] + j]).sum::<f32>()).collect();
            if layer + 2 < widths.len() {
                next.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            h = next;
        }
        assert_eq!(y.len(), 3);
        for (got, want) in y.iter().zip(&h) {
            assert!((got - want).abs() < 1e-4, "{y:?} against {h:?}");
        }
    }
}
