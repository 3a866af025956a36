//! Checks on the ONNX protobuf itself, before tract builds anything: what a
//! stranger's upload may make the server read, allocate or run.

use std::collections::{BTreeSet, HashSet};

use domain::{Dim, Dtype, TensorSpec};
use tract_onnx::pb::{self, tensor_proto::DataLocation, tensor_shape_proto::dimension, type_proto};

use crate::{ModelError, ModelLimits, TENSOR_NAME_BYTES_MAX};

pub(crate) struct Inspected {
    pub inputs: Vec<TensorSpec>,
    pub output_names: Vec<String>,
}

/// With `operators`, also that tract implements every operator the graph
/// uses (another engine judges its own).
pub(crate) fn inspect(
    proto: &pb::ModelProto,
    onnx: &tract_onnx::Onnx,
    limits: &ModelLimits,
    operators: bool,
) -> Result<Inspected, ModelError> {
    let graph = proto.graph.as_ref().ok_or_else(|| ModelError::NotOnnx("it has no graph".into()))?;
    if graph.output.is_empty() {
        return Err(ModelError::NotOnnx("its graph has no outputs".into()));
    }
    let mut totals = Totals::default();
    walk_graph(graph, &mut totals)?;
    if totals.nodes > limits.nodes_max {
        return Err(ModelError::TooManyNodes { count: totals.nodes, limit: limits.nodes_max });
    }
    if totals.initializer_bytes > limits.initializer_bytes_max {
        return Err(ModelError::InitializersTooLarge {
            bytes: totals.initializer_bytes,
            limit: limits.initializer_bytes_max,
        });
    }
    let unsupported: Vec<String> =
        totals.op_types.into_iter().filter(|op| operators && !onnx.op_register.0.contains_key(op)).collect();
    if !unsupported.is_empty() {
        return Err(ModelError::UnsupportedOperators(unsupported));
    }

    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|input| !initializers.contains(input.name.as_str())).collect();
    check_names("input", inputs.iter().map(|input| input.name.as_str()), limits.inputs_max, "model_inputs_max")?;
    check_names("output", graph.output.iter().map(|o| o.name.as_str()), limits.outputs_max, "model_outputs_max")?;
    let inputs: Vec<TensorSpec> =
        inputs.into_iter().map(|input| input_spec(input, limits.rank_max)).collect::<Result<_, _>>()?;
    if operators {
        refuse_what_tract_lacks(&inputs, &graph.output)?;
    }
    let output_names = graph.output.iter().map(|o| o.name.clone()).collect();
    Ok(Inspected { inputs, output_names })
}

/// tract has no bfloat16: a model that takes or answers one is refused by
/// name rather than by tract's "Unknown DatumType".
fn refuse_what_tract_lacks(inputs: &[TensorSpec], outputs: &[pb::ValueInfoProto]) -> Result<(), ModelError> {
    let bf16 = pb::tensor_proto::DataType::Bfloat16 as i32;
    let lacking = |what: &'static str, name: &str| ModelError::EngineLacksDtype {
        what,
        name: name.to_owned(),
        dtype: Dtype::Bf16,
        engine: "tract",
    };
    if let Some(input) = inputs.iter().find(|spec| spec.dtype == Dtype::Bf16) {
        return Err(lacking("input", &input.name));
    }
    let elem_type = |output: &pb::ValueInfoProto| {
        let type_proto::Value::TensorType(tensor) = output.r#type.as_ref()?.value.as_ref()?;
        Some(tensor.elem_type)
    };
    match outputs.iter().find(|output| elem_type(output) == Some(bf16)) {
        Some(output) => Err(lacking("output", &output.name)),
        None => Ok(()),
    }
}

/// What a model declares is shown on public pages and in every listing of
/// its versions, and names its tensors in calls and receipts: so its inputs
/// (or outputs) are at most `limit`, each name at most
/// [`TENSOR_NAME_BYTES_MAX`] bytes and given once. Two outputs of one name
/// would answer one tensor where the receipt's digest covers two.
fn check_names<'a>(
    what: &'static str,
    names: impl ExactSizeIterator<Item = &'a str>,
    limit: usize,
    setting: &'static str,
) -> Result<(), ModelError> {
    if names.len() > limit {
        return Err(ModelError::TooManyTensors { what: plural(what), count: names.len(), limit, setting });
    }
    let mut seen = HashSet::with_capacity(names.len());
    for name in names {
        check_name_length(what, name)?;
        if !seen.insert(name) {
            return Err(ModelError::DuplicateName { what, name: name.to_owned() });
        }
    }
    Ok(())
}

fn check_name_length(what: &'static str, name: &str) -> Result<(), ModelError> {
    if name.len() <= TENSOR_NAME_BYTES_MAX {
        return Ok(());
    }
    Err(ModelError::NameTooLong { what, bytes: name.len(), start: name.chars().take(32).collect() })
}

fn plural(what: &'static str) -> &'static str {
    match what {
        "input" => "inputs",
        _ => "outputs",
    }
}

#[derive(Default)]
struct Totals {
    nodes: usize,
    initializer_bytes: u64,
    op_types: BTreeSet<String>,
}

fn walk_graph(graph: &pb::GraphProto, totals: &mut Totals) -> Result<(), ModelError> {
    for tensor in &graph.initializer {
        count_tensor(tensor, totals)?;
    }
    for node in &graph.node {
        totals.nodes += 1;
        totals.op_types.insert(node.op_type.clone());
        for attribute in &node.attribute {
            for tensor in attribute.t.iter().chain(&attribute.tensors) {
                count_tensor(tensor, totals)?;
            }
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                walk_graph(subgraph, totals)?;
            }
        }
    }
    Ok(())
}

fn count_tensor(tensor: &pb::TensorProto, totals: &mut Totals) -> Result<(), ModelError> {
    // External data would make the server read files named by the upload.
    if tensor.data_location == Some(DataLocation::External as i32) || !tensor.external_data.is_empty() {
        return Err(ModelError::ExternalData(format!("tensor '{}'", tensor.name)));
    }
    let bytes = tensor.raw_data.len()
        + tensor.float_data.len() * 4
        + tensor.int32_data.len() * 4
        + tensor.int64_data.len() * 8
        + tensor.double_data.len() * 8
        + tensor.uint64_data.len() * 8
        + tensor.string_data.iter().map(Vec::len).sum::<usize>();
    totals.initializer_bytes = totals.initializer_bytes.saturating_add(bytes as u64);
    Ok(())
}

fn input_spec(input: &pb::ValueInfoProto, rank_max: usize) -> Result<TensorSpec, ModelError> {
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(ModelError::UnsupportedDtype {
            what: "input",
            name: input.name.clone(),
            elem_type: "a non-tensor type".into(),
        });
    };
    let dtype = dtype_of_onnx(tensor.elem_type).ok_or_else(|| ModelError::UnsupportedDtype {
        what: "input",
        name: input.name.clone(),
        elem_type: onnx_type_name(tensor.elem_type),
    })?;
    let shape = tensor.shape.as_ref().ok_or_else(|| ModelError::NoShape(input.name.clone()))?;
    if shape.dim.len() > rank_max {
        return Err(ModelError::RankTooLarge {
            what: "input",
            name: input.name.clone(),
            rank: shape.dim.len(),
            limit: rank_max,
        });
    }
    for dim in &shape.dim {
        if let Some(dimension::Value::DimParam(symbol)) = &dim.value {
            check_name_length("dimension", symbol)?;
        }
    }
    let shape = shape
        .dim
        .iter()
        .enumerate()
        .map(|(axis, dim)| match &dim.value {
            Some(dimension::Value::DimValue(size)) if *size >= 0 => Dim::Fixed(*size as u64),
            Some(dimension::Value::DimParam(symbol)) if !symbol.is_empty() => Dim::Symbol(symbol.clone()),
            // An unnamed free dimension: give it a name of its own so that it
            // constrains nothing else.
            _ => Dim::Symbol(format!("{}_dim{axis}", input.name)),
        })
        .collect();
    Ok(TensorSpec { name: input.name.clone(), dtype, shape })
}

fn dtype_of_onnx(elem_type: i32) -> Option<Dtype> {
    use pb::tensor_proto::DataType;
    Some(match DataType::try_from(elem_type).ok()? {
        DataType::Float => Dtype::F32,
        DataType::Double => Dtype::F64,
        DataType::Int8 => Dtype::I8,
        DataType::Int16 => Dtype::I16,
        DataType::Int32 => Dtype::I32,
        DataType::Int64 => Dtype::I64,
        DataType::Uint8 => Dtype::U8,
        DataType::Uint16 => Dtype::U16,
        DataType::Uint32 => Dtype::U32,
        DataType::Uint64 => Dtype::U64,
        DataType::Bool => Dtype::Bool,
        DataType::Float16 => Dtype::F16,
        DataType::Bfloat16 => Dtype::Bf16,
        _ => return None,
    })
}

fn onnx_type_name(elem_type: i32) -> String {
    pb::tensor_proto::DataType::try_from(elem_type)
        .map(|t| t.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("#{elem_type}"))
}
