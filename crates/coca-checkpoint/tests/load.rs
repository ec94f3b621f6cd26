//! Every fixture format loads to exactly the values torch saved.

mod common;

use candle_core::{DType, Device};
use coca_checkpoint::{Checkpoint, Format};
use common::{bits, expected, expected_shapes, fixture, ints};

/// Open `file` and check names, shapes, stored dtypes and bit-exact values, with
/// floats expected in `float_dtype`.
fn check_file(file: &str, format: Format, float_dtype: DType) -> Checkpoint {
    let ckpt = Checkpoint::open(fixture(file)).unwrap();
    assert_eq!(ckpt.format(), format, "{file}");
    let expected = expected();
    let names: Vec<&str> = ckpt.names().collect();
    let want: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(names, want, "{file}: tensor names");
    for (name, exp) in &expected {
        let info = ckpt.info(name).unwrap();
        assert_eq!(info.shape, exp.shape, "{file}: shape of {name}");
        let t = ckpt.get_stored(name, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), exp.shape.as_slice(), "{file}: {name}");
        if exp.is_float() {
            assert_eq!(info.dtype, float_dtype, "{file}: dtype of {name}");
            assert_eq!(
                bits(&t),
                exp.bits_as(float_dtype),
                "{file}: values of {name}"
            );
        } else {
            assert_eq!(info.dtype, DType::I64, "{file}: dtype of {name}");
            assert_eq!(&ints(&t), exp.values.as_ref().unwrap(), "{file}: {name}");
        }
    }
    assert_eq!(
        ckpt.validate(&expected_shapes()).map_err(|e| e.to_string()),
        Ok(())
    );
    ckpt
}

#[test]
fn torch_zip_f32_with_views_scalar_and_shared_storage() {
    let ckpt = check_file("plain_f32.bin", Format::TorchZip, DType::F32);
    // The fixture's awkward cases, checked by shape here and by value above.
    assert_eq!(ckpt.info("logit_scale").unwrap().shape, Vec::<usize>::new());
    assert_eq!(ckpt.info("visual.proj").unwrap().shape, [4, 3]);
    assert_eq!(ckpt.info("visual.sliced").unwrap().shape, [3, 3]);
    let embed = ckpt
        .get("text.token_embedding.weight", DType::F32, &Device::Cpu)
        .unwrap();
    let head = ckpt
        .get("text.head.weight", DType::F32, &Device::Cpu)
        .unwrap();
    assert_eq!(bits(&embed), bits(&head));
    assert!(!ckpt.stripped_module_prefix());
    assert!(ckpt.metadata().is_empty());
    let total: usize = expected()
        .values()
        .map(|e| e.shape.iter().product::<usize>())
        .sum();
    assert_eq!(ckpt.num_params(), total);
    assert_eq!(ckpt.len(), expected().len());
}

#[test]
fn torch_zip_f16() {
    check_file("plain_f16.bin", Format::TorchZip, DType::F16);
}

#[test]
fn torch_zip_bf16() {
    check_file("plain_bf16.bin", Format::TorchZip, DType::BF16);
}

#[test]
fn training_checkpoint_uses_state_dict_and_strips_module_prefix() {
    let ckpt = check_file("train_module.bin", Format::TorchZip, DType::F32);
    assert!(ckpt.stripped_module_prefix());
    // The optimizer state (exp_avg, ...) holds tensors too, but is not the model.
    assert_eq!(ckpt.len(), expected().len());
}

#[test]
fn safetensors_f32_with_metadata() {
    let ckpt = check_file("model_f32.safetensors", Format::Safetensors, DType::F32);
    assert_eq!(
        ckpt.metadata().get("format").map(String::as_str),
        Some("pt")
    );
}

#[test]
fn safetensors_bf16() {
    check_file("model_bf16.safetensors", Format::Safetensors, DType::BF16);
}

#[test]
fn narrowing_conversion_matches_torch_rounding() {
    let exp = expected();
    for file in ["plain_f32.bin", "model_f32.safetensors"] {
        let ckpt = Checkpoint::open(fixture(file)).unwrap();
        for (name, e) in exp.iter().filter(|(_, e)| e.is_float()) {
            for dtype in [DType::F16, DType::BF16] {
                let t = ckpt.get(name, dtype, &Device::Cpu).unwrap();
                assert_eq!(t.dtype(), dtype);
                assert_eq!(bits(&t), e.bits_as(dtype), "{file}: {name} as {dtype:?}");
            }
        }
    }
}

#[test]
fn widening_conversion_is_exact() {
    let exp = expected();
    let cases = [
        ("plain_f16.bin", DType::F16),
        ("plain_bf16.bin", DType::BF16),
        ("model_bf16.safetensors", DType::BF16),
    ];
    for (file, stored) in cases {
        let ckpt = Checkpoint::open(fixture(file)).unwrap();
        for (name, e) in exp.iter().filter(|(_, e)| e.is_float()) {
            let t = ckpt.get(name, DType::F32, &Device::Cpu).unwrap();
            let want = match stored {
                DType::F16 => e.f16_to_f32_bits.as_ref(),
                _ => e.bf16_to_f32_bits.as_ref(),
            };
            assert_eq!(Some(&bits(&t)), want, "{file}: {name} as f32");
        }
    }
}

#[test]
fn integer_buffers_convert_on_request() {
    let ckpt = Checkpoint::open(fixture("plain_bf16.bin")).unwrap();
    let ids = ckpt
        .get("text.position_ids", DType::F32, &Device::Cpu)
        .unwrap();
    assert_eq!(
        ids.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [0., 1., 2., 3., 4., 5.]
    );
    // load_all converts floats only.
    let all = ckpt.load_all(Some(DType::F32), &Device::Cpu).unwrap();
    assert_eq!(all["text.position_ids"].dtype(), DType::I64);
    assert_eq!(all["visual.proj"].dtype(), DType::F32);
    assert_eq!(all.len(), ckpt.len());
}

#[test]
fn var_builder_backend() {
    let ckpt = Checkpoint::open(fixture("plain_f16.bin")).unwrap();
    let exp = expected();
    let vb = ckpt.into_var_builder(DType::F32, &Device::Cpu);
    let proj = vb.pp("visual").get((4, 3), "proj").unwrap();
    assert_eq!(proj.dtype(), DType::F32);
    assert_eq!(
        Some(&bits(&proj)),
        exp["visual.proj"].f16_to_f32_bits.as_ref()
    );
    assert!(vb.contains_tensor("logit_scale"));
    assert!(!vb.contains_tensor("nope"));
    let err = vb.pp("visual").get((3, 4), "proj").unwrap_err().to_string();
    assert!(
        err.contains("visual.proj") && err.contains("plain_f16.bin"),
        "{err}"
    );
    let err = vb.get(3, "nope").unwrap_err().to_string();
    assert!(err.contains("'nope' not found"), "{err}");
}
