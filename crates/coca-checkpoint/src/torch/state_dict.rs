//! Find the state dict inside a decoded `torch.save` pickle and describe its tensors.
//!
//! [`super::pickle`] turns `data.pkl` into a tree of [`Obj`]s; this module interprets that tree
//! the way open_clip's `load_state_dict` interprets what `torch.load` returns: a dict with a
//! `state_dict` entry yields that entry (training checkpoints also carry `epoch`, `optimizer`, ...
//! which are ignored), otherwise the dict itself is the state dict. Tensors are recognised by
//! torch's rebuild functions; their data stays in the archive and is only described here (storage
//! key, dtype, strided view). Every tensor-shaped value either parses or produces an error naming
//! it. Objects are only ever described shallowly in messages ([`Node::describe`]): the tree may
//! share objects many times over, so printing one in full could take exponential time.

use candle_core::DType;

use super::pickle::{Node, Obj, Value};
use crate::strided::StridedLayout;

/// A tensor as the pickle describes it; its bytes live in zip entry `data/<storage_key>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PickledTensor {
    /// Name of the storage inside the archive's `data/` folder.
    pub storage_key: String,
    /// Element type of the storage.
    pub dtype: DType,
    /// Number of elements the storage holds, as the pickle claims.
    pub storage_numel: usize,
    /// Where the tensor sits inside the storage.
    pub layout: StridedLayout,
}

/// Why no usable state dict came out of the pickle.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StateDictError {
    /// No tensors where a state dict should be; the text says what was found.
    NoTensors(String),
    /// A tensor whose storage type has no candle equivalent.
    UnsupportedDtype { name: String, storage_type: String },
    /// A tensor-shaped value whose arguments do not make sense.
    Malformed { name: String, reason: String },
}

/// Extract the named tensors of the state dict in `root` (see the module docs).
/// Values that are not tensors (e.g. the `_metadata` torch attaches) are skipped.
pub(crate) fn extract(root: &Obj) -> Result<Vec<(String, PickledTensor)>, StateDictError> {
    // (the dict, what to call it when it has no tensors, what to call it when it is no dict)
    let (dict, context, subject) = match root.dict_get("state_dict") {
        Some(inner) => (inner, "its 'state_dict' entry", "its 'state_dict' entry"),
        None => (Obj::clone(root), "the top-level dict", "the pickled object"),
    };
    let Value::Dict(entries) = &dict.value else {
        return Err(StateDictError::NoTensors(format!(
            "{subject} is {}, not a dict of tensors",
            dict.describe()
        )));
    };

    let mut key_names = Vec::new();
    let mut tensors = Vec::new();
    for (key, value) in entries.borrow().iter() {
        let Some(name) = key.as_str() else {
            continue;
        };
        if let Some(tensor) = parse_tensor(name, value)? {
            tensors.push((name.to_string(), tensor));
        } else {
            key_names.push(name.to_string());
        }
    }
    if tensors.is_empty() {
        key_names.sort();
        return Err(StateDictError::NoTensors(format!(
            "{context} has {} entries and none is a tensor (keys: {}); expected a state dict \
             (name -> tensor) or a dict with a 'state_dict' entry",
            key_names.len(),
            preview_list(&key_names)
        )));
    }
    Ok(tensors)
}

/// `Ok(None)` when `value` is not a tensor at all; an error when it is a tensor
/// this crate cannot read.
fn parse_tensor(name: &str, value: &Node) -> Result<Option<PickledTensor>, StateDictError> {
    match &value.value {
        Value::Reduce { callable, args } => parse_call(name, callable, args),
        // A tensor carrying extra Python attributes: BUILD(tensor, state).
        Value::Build { object, .. } => parse_tensor(name, object),
        _ => Ok(None),
    }
}

/// `callable(*args)`, if it rebuilds a tensor.
fn parse_call(
    name: &str,
    callable: &Node,
    args: &Node,
) -> Result<Option<PickledTensor>, StateDictError> {
    let malformed = |reason: String| malformed(name, reason);
    let Value::Global {
        module: module_name,
        name: class_name,
    } = &callable.value
    else {
        return Ok(None);
    };
    let Some(args) = args.as_tuple() else {
        return Err(malformed(format!(
            "{module_name}.{class_name} called with {} instead of a tuple",
            args.describe()
        )));
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            rebuild_tensor(name, args).map(Some)
        }
        // nn.Parameter(data, requires_grad, hooks[, state]): the data is a tensor.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            let Some(data) = args.first() else {
                return Err(malformed(format!("{class_name} without arguments")));
            };
            match parse_tensor(name, data)? {
                Some(t) => Ok(Some(t)),
                None => Err(malformed(format!("{class_name} does not wrap a tensor"))),
            }
        }
        // Tensor subclasses: (rebuild_func, type, rebuild_args, state).
        ("torch._tensor", "_rebuild_from_type_v2") => {
            if args.len() < 3 {
                return Err(malformed(format!(
                    "_rebuild_from_type_v2 with {} arguments",
                    args.len()
                )));
            }
            match parse_call(name, &args[0], &args[2])? {
                Some(t) => Ok(Some(t)),
                None => Err(malformed(
                    "_rebuild_from_type_v2 does not wrap a tensor".to_string(),
                )),
            }
        }
        (module, class) if module.starts_with("torch") && class.starts_with("_rebuild") => {
            Err(malformed(format!(
                "stored with {module}.{class} (quantized, sparse, meta or other special \
                 tensors are not supported; save a dense CPU tensor)"
            )))
        }
        _ => Ok(None),
    }
}

fn malformed(name: &str, reason: String) -> StateDictError {
    StateDictError::Malformed {
        name: name.to_string(),
        reason,
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])`.
fn rebuild_tensor(name: &str, args: &[Obj]) -> Result<PickledTensor, StateDictError> {
    let bad = |reason: String| malformed(name, reason);
    let [storage, offset, size, stride, ..] = args else {
        return Err(bad(
            "_rebuild_tensor_v2 needs at least 4 arguments".to_string()
        ));
    };
    let (storage_key, dtype, storage_numel) = parse_storage(name, storage)?;
    let offset = offset
        .as_usize()
        .ok_or_else(|| bad(format!("bad storage offset: {}", summary(offset))))?;
    let shape = to_usize_tuple(size).ok_or_else(|| bad(format!("bad size: {}", summary(size))))?;
    let strides =
        to_usize_tuple(stride).ok_or_else(|| bad(format!("bad stride: {}", summary(stride))))?;
    if shape.len() != strides.len() {
        return Err(bad(format!(
            "size {shape:?} and stride {strides:?} have different lengths"
        )));
    }
    Ok(PickledTensor {
        storage_key,
        dtype,
        storage_numel,
        layout: StridedLayout {
            shape,
            strides,
            offset,
        },
    })
}

/// The persistent id torch writes for a storage:
/// `('storage', torch.<Type>Storage, key, location, numel)`.
fn parse_storage(name: &str, storage: &Node) -> Result<(String, DType, usize), StateDictError> {
    let bad = |reason: String| malformed(name, reason);
    let Value::Persistent(pid) = &storage.value else {
        return Err(bad(format!(
            "expected a storage reference, found {}",
            storage.describe()
        )));
    };
    let fields = match pid.as_tuple() {
        Some(fields) if fields.len() >= 5 => fields,
        _ => {
            return Err(bad(format!(
                "unrecognised storage reference ({})",
                pid.describe()
            )))
        }
    };
    if fields[0].as_str() != Some("storage") {
        return Err(bad(format!(
            "unrecognised storage reference ({})",
            summary(&fields[0])
        )));
    }
    let Value::Global {
        name: class_name, ..
    } = &fields[1].value
    else {
        return Err(bad(format!(
            "unrecognised storage type ({})",
            summary(&fields[1])
        )));
    };
    let dtype = storage_dtype(class_name).ok_or_else(|| StateDictError::UnsupportedDtype {
        name: name.to_string(),
        storage_type: class_name.clone(),
    })?;
    let Some(key) = fields[2].as_str() else {
        return Err(bad(format!(
            "unrecognised storage key ({})",
            summary(&fields[2])
        )));
    };
    let numel = fields[4]
        .as_usize()
        .ok_or_else(|| bad(format!("bad storage size: {}", summary(&fields[4]))))?;
    Ok((key.to_string(), dtype, numel))
}

/// candle's dtype for a torch legacy storage class.
fn storage_dtype(class_name: &str) -> Option<DType> {
    Some(match class_name {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" => DType::U8,
        // torch stores bools as one byte holding 0 or 1, which reads faithfully as u8.
        "BoolStorage" => DType::U8,
        _ => return None,
    })
}

fn to_usize_tuple(obj: &Node) -> Option<Vec<usize>> {
    obj.as_tuple()?.iter().map(|o| o.as_usize()).collect()
}

/// A scalar's value, or a container's kind, for messages: bounded in length whatever the object.
fn summary(obj: &Node) -> String {
    const MAX_CHARS: usize = 60;
    match &obj.value {
        Value::Int(v) => v.to_string(),
        Value::Float(v) => v.to_string(),
        Value::Bool(v) => if *v { "True" } else { "False" }.to_string(),
        Value::Str(s) if s.chars().count() <= MAX_CHARS => format!("'{s}'"),
        Value::Str(s) => format!("'{}...'", s.chars().take(MAX_CHARS).collect::<String>()),
        Value::Tuple(items) => {
            let shown: Vec<String> = items
                .iter()
                .take(8)
                .map(|i| match &i.value {
                    Value::Int(v) => v.to_string(),
                    _ => i.describe(),
                })
                .collect();
            let more = if items.len() > 8 { ", ..." } else { "" };
            format!("({}{more})", shown.join(", "))
        }
        _ => obj.describe(),
    }
}

/// Up to ten items, then how many more.
fn preview_list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = items
        .iter()
        .take(SHOWN)
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(", ... and {} more", items.len() - SHOWN));
    }
    if items.is_empty() {
        out.push_str("none");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::pickle::tests::Pickle;
    use super::*;

    /// `_rebuild_tensor_v2(storage, 0, shape, stride, False, {})` as torch pickles it.
    fn tensor(p: Pickle, storage_type: &str, key: &str, shape: &[i32], stride: &[i32]) -> Pickle {
        let p = p.global("torch._utils", "_rebuild_tensor_v2");
        tensor_args(p, storage_type, key, shape, stride).op(b"R")
    }

    /// The argument tuple of [`tensor`].
    fn tensor_args(
        p: Pickle,
        storage_type: &str,
        key: &str,
        shape: &[i32],
        stride: &[i32],
    ) -> Pickle {
        p.mark()
            .mark()
            .str("storage")
            .global("torch", storage_type)
            .str(key)
            .str("cpu")
            .int(shape.iter().product())
            .op(b"t")
            .op(b"Q")
            .int(0)
            .ints(shape)
            .ints(stride)
            .op(b"\x89}")
            .op(b"t")
    }

    fn extract_from(p: Pickle) -> Result<Vec<(String, PickledTensor)>, StateDictError> {
        extract(&p.finish())
    }

    #[test]
    fn plain_state_dict_skips_non_tensors() {
        let p = Pickle::new().op(b"}").mark().str("w");
        let p = tensor(p, "HalfStorage", "0", &[2, 3], &[3, 1]);
        let p = p.str("_metadata").op(b"}").op(b"u");
        let got = extract_from(p).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "w");
        assert_eq!(got[0].1.dtype, DType::F16);
        assert_eq!(got[0].1.layout.shape, [2, 3]);
        assert_eq!(got[0].1.storage_numel, 6);
    }

    #[test]
    fn state_dict_entry_wins_and_parameters_unwrap() {
        let p = Pickle::new().op(b"}").mark().str("epoch").int(3);
        let p = p.str("state_dict").op(b"}").str("p");
        let p = p.global("torch._utils", "_rebuild_parameter").mark();
        let p = tensor(p, "FloatStorage", "1", &[4], &[1]);
        let p = p.op(b"\x88}").op(b"t").op(b"R").op(b"s").str("other");
        let p = tensor(p, "FloatStorage", "9", &[1], &[1]).op(b"u");
        let got = extract_from(p).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].0.as_str(), got[0].1.storage_key.as_str()),
            ("p", "1")
        );
    }

    #[test]
    fn subclass_and_build_wrappers_unwrap() {
        // _rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, (args...), {}) inside BUILD(.., {}).
        let p = Pickle::new().op(b"}").str("s");
        let p = p.global("torch._tensor", "_rebuild_from_type_v2").mark();
        let p = p
            .global("torch._utils", "_rebuild_tensor_v2")
            .global("torch.nn.parameter", "Parameter");
        let p = tensor_args(p, "FloatStorage", "2", &[3], &[1]);
        let p = p.op(b"}").op(b"t").op(b"R").op(b"}").op(b"b").op(b"s");
        let got = extract_from(p).unwrap();
        assert_eq!(got[0].0, "s");
        assert_eq!(got[0].1.storage_key, "2");
    }

    #[test]
    fn unsupported_storage_is_reported_by_name() {
        let p = Pickle::new().op(b"}").str("q");
        let p = tensor(p, "ComplexFloatStorage", "0", &[1], &[1]).op(b"s");
        assert_eq!(
            extract_from(p),
            Err(StateDictError::UnsupportedDtype {
                name: "q".to_string(),
                storage_type: "ComplexFloatStorage".to_string()
            })
        );
    }

    #[test]
    fn special_tensor_encodings_are_errors_not_skips() {
        let p = Pickle::new().op(b"}").str("q");
        let p = p
            .global("torch._utils", "_rebuild_qtensor")
            .op(b")R")
            .op(b"s");
        let err = extract_from(p).unwrap_err();
        assert!(
            matches!(err, StateDictError::Malformed { ref name, ref reason }
            if name == "q" && reason.contains("_rebuild_qtensor"))
        );
    }

    #[test]
    fn bad_arguments_are_described_briefly() {
        // A size that is a list instead of a tuple of ints.
        let p = Pickle::new().op(b"}").str("t");
        let p = p.global("torch._utils", "_rebuild_tensor_v2").mark().mark();
        let p = p.str("storage").global("torch", "FloatStorage").str("0");
        let p = p.str("cpu").int(4).op(b"tQ").int(0).op(b"]").ints(&[1]);
        let p = p.op(b"t").op(b"R").op(b"s");
        let err = extract_from(p).unwrap_err();
        assert!(
            matches!(err, StateDictError::Malformed { ref reason, .. } if reason == "bad size: a list"),
            "{err:?}"
        );
    }

    #[test]
    fn dicts_without_tensors_list_their_keys() {
        let p = Pickle::new().op(b"}").mark().str("model").op(b"}");
        let p = p.str("epoch").int(1).op(b"u");
        let StateDictError::NoTensors(msg) = extract_from(p).unwrap_err() else {
            panic!("expected NoTensors")
        };
        assert!(msg.contains("'epoch', 'model'"), "{msg}");
        let StateDictError::NoTensors(msg) = extract_from(Pickle::new().op(b"]")).unwrap_err()
        else {
            panic!("expected NoTensors")
        };
        assert!(msg.contains("a list"), "{msg}");
        let p = Pickle::new().op(b"}").str("state_dict").int(1).op(b"s");
        let StateDictError::NoTensors(msg) = extract_from(p).unwrap_err() else {
            panic!("expected NoTensors")
        };
        assert!(msg.contains("'state_dict' entry is an int"), "{msg}");
    }
}
