//! Model archives: a tar file holding one `.onnx` file and the files its
//! tensors keep their data in (ONNX external data). Read in memory, never
//! unpacked: an external-data location names an entry of the archive,
//! relative to the `.onnx` file's folder, so no path can reach outside it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use tract_onnx::pb::{self, tensor_proto::DataLocation};

use crate::ModelError;

/// Whether `bytes` are a tar file (the POSIX `ustar` magic at 257).
pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar".as_slice())
}

/// The archive's files by their normalised path, and which is the model.
#[derive(Debug)]
pub struct Archive<'a> {
    pub model: &'a [u8],
    folder: PathBuf,
    files: HashMap<PathBuf, &'a [u8]>,
}

fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::NotOnnx(format!("the archive {}", message.into()))
}

/// A path inside the archive: relative, no `..`, `.` dropped.
fn normal(path: &Path) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!normal.as_os_str().is_empty()).then_some(normal)
}

pub fn read(bytes: &[u8]) -> Result<Archive<'_>, ModelError> {
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(bytes);
    let entries = archive.entries().map_err(|e| invalid(format!("cannot be read ({e})")))?;
    for entry in entries {
        let entry = entry.map_err(|e| invalid(format!("cannot be read ({e})")))?;
        let path = entry.path().map_err(|e| invalid(format!("has a path that is not text ({e})")))?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(invalid(format!(
                "holds {} as a {kind:?}; only files and folders may be in it",
                path.display()
            )));
        }
        let name = normal(&path)
            .ok_or_else(|| invalid(format!("holds {}, a path outside it; paths are relative", path.display())))?;
        let start = usize::try_from(entry.raw_file_position()).map_err(|_| invalid("is too large"))?;
        let size = usize::try_from(entry.size()).map_err(|_| invalid("is too large"))?;
        let data =
            start.checked_add(size).and_then(|end| bytes.get(start..end)).ok_or_else(|| invalid("ends early"))?;
        if files.insert(name.clone(), data).is_some() {
            return Err(invalid(format!("holds {} twice", name.display())));
        }
    }
    let models: Vec<&PathBuf> = files.keys().filter(|path| path.extension().is_some_and(|e| e == "onnx")).collect();
    let [model] = models.as_slice() else {
        return Err(invalid(format!("holds {} .onnx files; it must hold exactly one", models.len())));
    };
    let folder = model.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Archive { model: files[*model], folder, files })
}

impl Archive<'_> {
    /// Puts every external tensor's bytes into the model, from the file its
    /// `location` names, at its `offset` and `length`. Refused before any
    /// copy if they add up to more than `bytes_max`.
    pub fn inline_external_data(&self, proto: &mut pb::ModelProto, bytes_max: u64) -> Result<(), ModelError> {
        let Some(graph) = proto.graph.as_mut() else { return Ok(()) };
        let mut total = 0u64;
        let mut slices = vec![];
        visit(graph, &mut |tensor| {
            let slice = self.external_slice(tensor)?;
            total = total.saturating_add(slice.map_or(0, |s| s.len() as u64));
            slices.push(slice);
            Ok(())
        })?;
        if total > bytes_max {
            return Err(ModelError::InitializersTooLarge { bytes: total, limit: bytes_max });
        }
        let mut slices = slices.into_iter();
        visit(graph, &mut |tensor| {
            if let Some(slice) = slices.next().flatten() {
                tensor.raw_data = slice.to_vec();
                tensor.external_data.clear();
                tensor.data_location = Some(DataLocation::Default as i32);
            }
            Ok(())
        })
    }

    /// The bytes an external tensor names; `None` for a tensor kept inline.
    fn external_slice(&self, tensor: &pb::TensorProto) -> Result<Option<&[u8]>, ModelError> {
        let external = tensor.data_location == Some(DataLocation::External as i32) || !tensor.external_data.is_empty();
        if !external {
            return Ok(None);
        }
        let field = |key: &str| tensor.external_data.iter().find(|entry| entry.key == key).map(|e| e.value.as_str());
        let bad = |what: String| ModelError::ArchiveData(format!("tensor '{}': {what}", tensor.name));
        let location = field("location").ok_or_else(|| bad("no location".into()))?;
        let path = normal(Path::new(location))
            .map(|relative| self.folder.join(relative))
            .ok_or_else(|| bad(format!("location {location:?} is not a path inside the archive")))?;
        let file = self.files.get(&path).ok_or_else(|| bad(format!("the archive has no file {location:?}")))?;
        let number = |key: &str| -> Result<Option<u64>, ModelError> {
            field(key).map(|v| v.parse::<u64>().map_err(|_| bad(format!("{key} {v:?} is not a number")))).transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let length = number("length")?.unwrap_or((file.len() as u64).saturating_sub(offset));
        let end = offset.checked_add(length).filter(|&end| end <= file.len() as u64).ok_or_else(|| {
            bad(format!("bytes {offset}..{offset}+{length} are outside {location:?} ({} bytes)", file.len()))
        })?;
        Ok(Some(&file[offset as usize..end as usize]))
    }
}

/// Every tensor of a graph, its subgraphs' included, in one fixed order.
fn visit(
    graph: &mut pb::GraphProto,
    each: &mut impl FnMut(&mut pb::TensorProto) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    for tensor in &mut graph.initializer {
        each(tensor)?;
    }
    for node in &mut graph.node {
        for attribute in &mut node.attribute {
            for tensor in attribute.t.iter_mut().chain(&mut attribute.tensors) {
                each(tensor)?;
            }
            for subgraph in attribute.g.iter_mut().chain(&mut attribute.graphs) {
                visit(subgraph, each)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelLimits, Tensor, TensorData, load_model, synthetic};

    const LIMITS: ModelLimits = ModelLimits { nodes_max: 100, initializer_bytes_max: 1 << 20, ..ModelLimits::TRUSTED };

    /// A tar file of `(path, kind, bytes)`; paths are written as given, even
    /// ones the `tar` crate's own builder would refuse.
    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(vec![]);
        for &(path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            let name = &mut header.as_gnu_mut().expect("gnu").name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").expect("link");
            }
            header.set_cksum();
            builder.append(&header, data).expect("append");
        }
        builder.into_inner().expect("finish")
    }

    fn run(bytes: &[u8]) -> Vec<f32> {
        let model = load_model(bytes, &LIMITS).unwrap_or_else(|e| panic!("{e}"));
        let input = Tensor { shape: vec![2, 4], data: TensorData::F32((0..8).map(|i| i as f32 / 8.0).collect()) };
        match &model.run(vec![input], u64::MAX).expect("runs")[0].1.data {
            TensorData::F32(values) => values.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_archive_with_external_data_runs_like_the_single_file() {
        let single = synthetic::mlp(&[4, 16, 3], 5).bytes;
        let (onnx, data) = synthetic::with_external_data(&single, "weights/all.bin");
        // The single .onnx file alone names data it does not have.
        assert!(matches!(load_model(&onnx, &LIMITS), Err(ModelError::ExternalData(_))));
        let file = tar::EntryType::Regular;
        let archive = tar_of(&[
            ("model/", tar::EntryType::Directory, b""),
            ("model/./net.onnx", file, &onnx),
            ("model/weights/all.bin", file, &data),
            ("model/README.md", file, b"# notes"),
        ]);
        assert!(is_archive(&archive));
        assert_eq!(run(&archive), run(&single));
    }

    #[test]
    fn archives_that_reach_outside_or_do_not_fit_are_refused() {
        let single = synthetic::mlp(&[4, 16, 3], 5).bytes;
        let file = tar::EntryType::Regular;
        let refused = |entries: &[(&str, tar::EntryType, &[u8])], expected: &str| {
            let error = load_model(&tar_of(entries), &LIMITS).expect_err(expected).to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        };
        let (onnx, data) = synthetic::with_external_data(&single, "w.bin");
        refused(&[("m.onnx", file, &onnx)], "no file \"w.bin\"");
        refused(&[("m.onnx", file, &onnx), ("w.bin", file, &data[..data.len() - 1])], "outside \"w.bin\"");
        refused(&[("m.onnx", file, &onnx), ("../w.bin", file, &data)], "a path outside it");
        refused(&[("m.onnx", file, &onnx), ("/w.bin", file, &data)], "a path outside it");
        refused(&[("m.onnx", file, &onnx), ("w.bin", tar::EntryType::Symlink, b"")], "only files and folders");
        refused(&[("m.onnx", file, &onnx), ("w.bin", file, &data), ("w.bin", file, &data)], "twice");
        refused(&[("m.onnx", file, &onnx), ("n.onnx", file, &onnx)], "2 .onnx files");
        refused(&[("w.bin", file, &data)], "0 .onnx files");
        let (escaping, _) = synthetic::with_external_data(&single, "../w.bin");
        refused(&[("m/m.onnx", file, &escaping), ("w.bin", file, &data)], "not a path inside the archive");
        let (absolute, _) = synthetic::with_external_data(&single, "/etc/passwd");
        refused(&[("m.onnx", file, &absolute)], "not a path inside the archive");
        // Weights past the limit are refused before they are copied.
        let big = synthetic::mlp(&[4, 1024, 300], 1).bytes;
        let (onnx, data) = synthetic::with_external_data(&big, "w.bin");
        refused(&[("m.onnx", file, &onnx), ("w.bin", file, &data)], "model_initializer_bytes_max");
    }
}
