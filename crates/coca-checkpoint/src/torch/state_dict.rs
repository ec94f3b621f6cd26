//! Find the state dict inside a decoded `torch.save` pickle and describe its tensors.
//!
//! candle's pickle VM turns `data.pkl` into an [`Object`] tree; this module interprets
//! that tree the way open_clip's `load_state_dict` interprets what `torch.load` returns:
//! a dict with a `state_dict` entry yields that entry (training checkpoints also carry
//! `epoch`, `optimizer`, ... which are ignored), otherwise the dict itself is the state
//! dict. Tensors are recognised by torch's rebuild functions; their data stays in the
//! archive and is only described here (storage key, dtype, strided view).
//!
//! candle's own `Object::into_tensor_info` is not used because it silently skips
//! tensors it cannot handle and encodes offsets in bytes inside a `Layout`; here every
//! tensor-shaped value either parses or produces an error naming it.

use candle_core::pickle::Object;
use candle_core::DType;

use crate::strided::StridedLayout;

/// A tensor as the pickle describes it; its bytes live in zip entry `data/<storage_key>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PickledTensor {
    /// Name of the storage inside the archive's `data/` folder.
    pub storage_key: String,
    /// Element type of the storage.
    pub dtype: DType,
    /// Number of elements the storage holds.
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
pub(crate) fn extract(root: Object) -> Result<Vec<(String, PickledTensor)>, StateDictError> {
    let Object::Dict(entries) = root else {
        return Err(StateDictError::NoTensors(format!(
            "the pickled object is {}, not a dict of tensors",
            describe(&root)
        )));
    };
    let state_dict_key = Object::Unicode("state_dict".to_string());
    let (entries, context) = match entries.iter().position(|(k, _)| *k == state_dict_key) {
        Some(i) => match entries.into_iter().nth(i).map(|(_, v)| v) {
            Some(Object::Dict(inner)) => (inner, "its 'state_dict' entry"),
            Some(other) => {
                return Err(StateDictError::NoTensors(format!(
                    "its 'state_dict' entry is {}, not a dict of tensors",
                    describe(&other)
                )))
            }
            None => unreachable!("position() found the entry"),
        },
        None => (entries, "the top-level dict"),
    };

    let mut key_names = Vec::new();
    let mut tensors = Vec::new();
    for (key, value) in entries {
        let Object::Unicode(name) = key else {
            continue;
        };
        if let Some(tensor) = parse_tensor(&name, value)? {
            tensors.push((name, tensor));
        } else {
            key_names.push(name);
        }
    }
    if tensors.is_empty() {
        // Sorted: candle's pickle VM does not preserve insertion order within SETITEMS.
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
fn parse_tensor(name: &str, value: Object) -> Result<Option<PickledTensor>, StateDictError> {
    let malformed = |reason: String| malformed(name, reason);
    let (callable, args) = match value {
        Object::Reduce { callable, args } => (*callable, *args),
        // A tensor carrying extra Python attributes: BUILD(tensor, state).
        Object::Build { callable, .. } => return parse_tensor(name, *callable),
        _ => return Ok(None),
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable
    else {
        return Ok(None);
    };
    let mut args = match args {
        Object::Tuple(args) => args,
        other => {
            return Err(malformed(format!(
                "{module_name}.{class_name} called with {} instead of a tuple",
                describe(&other)
            )))
        }
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            rebuild_tensor(name, args).map(Some)
        }
        // nn.Parameter(data, requires_grad, hooks[, state]): the data is a tensor.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            if args.is_empty() {
                return Err(malformed(format!("{class_name} without arguments")));
            }
            match parse_tensor(name, args.swap_remove(0))? {
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
            let inner_args = args.swap_remove(2);
            let inner = Object::Reduce {
                callable: Box::new(args.swap_remove(0)),
                args: Box::new(inner_args),
            };
            match parse_tensor(name, inner)? {
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
fn rebuild_tensor(name: &str, args: Vec<Object>) -> Result<PickledTensor, StateDictError> {
    let bad = |reason: String| malformed(name, reason);
    let mut args = args.into_iter();
    let (Some(storage), Some(offset), Some(size), Some(stride)) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        return Err(bad(
            "_rebuild_tensor_v2 needs at least 4 arguments".to_string()
        ));
    };
    let (storage_key, dtype, storage_numel) = parse_storage(name, storage)?;
    let offset = to_usize(&offset).ok_or_else(|| bad(format!("bad storage offset {offset:?}")))?;
    let shape = to_usize_tuple(&size).ok_or_else(|| bad(format!("bad size {size:?}")))?;
    let strides = to_usize_tuple(&stride).ok_or_else(|| bad(format!("bad stride {stride:?}")))?;
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
fn parse_storage(name: &str, storage: Object) -> Result<(String, DType, usize), StateDictError> {
    let bad = |reason: String| malformed(name, reason);
    let Object::PersistentLoad(pid) = storage else {
        return Err(bad(format!(
            "expected a storage reference, found {}",
            describe(&storage)
        )));
    };
    let fields = match *pid {
        Object::Tuple(fields) if fields.len() >= 5 => fields,
        other => return Err(bad(format!("unrecognised storage reference {other:?}"))),
    };
    if fields[0] != Object::Unicode("storage".to_string()) {
        return Err(bad(format!(
            "unrecognised storage reference {:?}",
            fields[0]
        )));
    }
    let Object::Class { class_name, .. } = &fields[1] else {
        return Err(bad(format!("unrecognised storage type {:?}", fields[1])));
    };
    let dtype = storage_dtype(class_name).ok_or_else(|| StateDictError::UnsupportedDtype {
        name: name.to_string(),
        storage_type: class_name.clone(),
    })?;
    let Object::Unicode(key) = &fields[2] else {
        return Err(bad(format!("unrecognised storage key {:?}", fields[2])));
    };
    let numel =
        to_usize(&fields[4]).ok_or_else(|| bad(format!("bad storage size {:?}", fields[4])))?;
    Ok((key.clone(), dtype, numel))
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

fn to_usize(obj: &Object) -> Option<usize> {
    match obj {
        Object::Int(v) => usize::try_from(*v).ok(),
        Object::Long(v) => usize::try_from(*v).ok(),
        _ => None,
    }
}

fn to_usize_tuple(obj: &Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(items) => items.iter().map(to_usize).collect(),
        _ => None,
    }
}

/// A short phrase for an object's kind, for error messages ("a list", "an int").
fn describe(obj: &Object) -> String {
    match obj {
        Object::Class {
            module_name,
            class_name,
        } => format!("the class {module_name}.{class_name}"),
        Object::Int(_) | Object::Long(_) => "an int".to_string(),
        Object::Float(_) => "a float".to_string(),
        Object::Unicode(_) => "a string".to_string(),
        Object::Bool(_) => "a bool".to_string(),
        Object::None => "None".to_string(),
        Object::Tuple(_) => "a tuple".to_string(),
        Object::List(_) => "a list".to_string(),
        Object::Mark => "a pickle mark".to_string(),
        Object::Dict(_) => "a dict".to_string(),
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => match &**callable {
            Object::Class {
                module_name,
                class_name,
            } => format!("an object built by {module_name}.{class_name}"),
            _ => "an object".to_string(),
        },
        Object::PersistentLoad(_) => "a persistent reference".to_string(),
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
    use super::*;

    fn s(v: &str) -> Object {
        Object::Unicode(v.to_string())
    }

    fn class(m: &str, c: &str) -> Object {
        Object::Class {
            module_name: m.to_string(),
            class_name: c.to_string(),
        }
    }

    fn ints(v: &[i32]) -> Object {
        Object::Tuple(v.iter().map(|&i| Object::Int(i)).collect())
    }

    fn tensor(storage_type: &str, key: &str, shape: &[i32], stride: &[i32]) -> Object {
        let pid = Object::Tuple(vec![
            s("storage"),
            class("torch", storage_type),
            s(key),
            s("cpu"),
            Object::Int(shape.iter().product()),
        ]);
        Object::Reduce {
            callable: Box::new(class("torch._utils", "_rebuild_tensor_v2")),
            args: Box::new(Object::Tuple(vec![
                Object::PersistentLoad(Box::new(pid)),
                Object::Int(0),
                ints(shape),
                ints(stride),
                Object::Bool(false),
                Object::Dict(vec![]),
            ])),
        }
    }

    #[test]
    fn plain_state_dict_skips_non_tensors() {
        let root = Object::Dict(vec![
            (s("w"), tensor("HalfStorage", "0", &[2, 3], &[3, 1])),
            (s("_metadata"), Object::Dict(vec![])),
        ]);
        let got = extract(root).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "w");
        assert_eq!(got[0].1.dtype, DType::F16);
        assert_eq!(got[0].1.layout.shape, [2, 3]);
    }

    #[test]
    fn state_dict_entry_wins_and_parameters_unwrap() {
        let param = Object::Reduce {
            callable: Box::new(class("torch._utils", "_rebuild_parameter")),
            args: Box::new(Object::Tuple(vec![
                tensor("FloatStorage", "1", &[4], &[1]),
                Object::Bool(true),
                Object::Dict(vec![]),
            ])),
        };
        let root = Object::Dict(vec![
            (s("epoch"), Object::Int(3)),
            (s("state_dict"), Object::Dict(vec![(s("p"), param)])),
            (s("other"), tensor("FloatStorage", "9", &[1], &[1])),
        ]);
        let got = extract(root).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].0.as_str(), got[0].1.storage_key.as_str()),
            ("p", "1")
        );
    }

    #[test]
    fn unsupported_storage_is_reported_by_name() {
        let root = Object::Dict(vec![(
            s("q"),
            tensor("ComplexFloatStorage", "0", &[1], &[1]),
        )]);
        assert_eq!(
            extract(root),
            Err(StateDictError::UnsupportedDtype {
                name: "q".to_string(),
                storage_type: "ComplexFloatStorage".to_string()
            })
        );
    }

    #[test]
    fn special_tensor_encodings_are_errors_not_skips() {
        let q = Object::Reduce {
            callable: Box::new(class("torch._utils", "_rebuild_qtensor")),
            args: Box::new(Object::Tuple(vec![])),
        };
        let err = extract(Object::Dict(vec![(s("q"), q)])).unwrap_err();
        assert!(
            matches!(err, StateDictError::Malformed { ref name, ref reason }
            if name == "q" && reason.contains("_rebuild_qtensor"))
        );
    }

    #[test]
    fn dicts_without_tensors_list_their_keys() {
        let root = Object::Dict(vec![
            (s("model"), Object::Dict(vec![])),
            (s("epoch"), Object::Int(1)),
        ]);
        let StateDictError::NoTensors(msg) = extract(root).unwrap_err() else {
            panic!("expected NoTensors")
        };
        assert!(msg.contains("'epoch', 'model'"), "{msg}");
        let StateDictError::NoTensors(msg) = extract(Object::List(vec![])).unwrap_err() else {
            panic!("expected NoTensors")
        };
        assert!(msg.contains("a list"), "{msg}");
    }
}
