//! Whether a model fits in memory, decided from its config before any tensor is created.
//!
//! [`CocaConfig::validate`] bounds every size, but a config within those bounds can still describe a model
//! far larger than the machine (256 blocks of width 16,384 is 3 TB of weights). [`check_fits`] estimates the
//! parameter bytes and the activations of one batch, compares them with the memory this process can still
//! get (`MemAvailable`, and what `RLIMIT_AS` leaves), and refuses with a message naming the largest tower and
//! the cost. The estimate counts only the dominant terms, so it is a lower bound: a refused run could not
//! have fitted, and a run that passes may still be too large for the machine.

use std::path::Path;

use candle_core::Device;

use crate::config::{CocaConfig, ConfigSource};
use crate::error::{ModelError, Result};

/// What a command is about to do with the model.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Images or texts per forward pass.
    pub batch: usize,
    /// Bytes per weight element (4 for fp32, 2 for fp16/bf16).
    pub dtype_bytes: usize,
    /// Training keeps every block's activations and a gradient per weight.
    pub training: bool,
    /// Where the tensors live; only host memory is checked (GPU memory is not queried).
    pub device: Device,
}

/// Parameters and activation bytes of a model under a [`Workload`] (lower bounds).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// Number of weights.
    pub parameters: f64,
    /// Bytes for the weights (and their gradients when training).
    pub parameter_bytes: f64,
    /// Bytes of activations for one batch.
    pub activation_bytes: f64,
    /// The tower with the most weights, described by its config fields.
    pub largest_tower: String,
}

/// Weights of one transformer block: the q/k/v/out projections and the two MLP matrices.
fn block(width: f64, mlp: f64) -> f64 {
    4.0 * width * width + 2.0 * width * mlp
}

/// Activations of one block for a batch of sequences: attention scores, the MLP hidden layer and the
/// residual stream, as elements.
fn block_activations(batch: f64, tokens: f64, keys: f64, width: f64, mlp: f64, heads: f64) -> f64 {
    batch * (heads * tokens * keys + tokens * mlp + 2.0 * tokens * width)
}

/// The estimate for `cfg` under `workload`. The config must have passed [`CocaConfig::validate`] (all
/// sizes non-zero); arithmetic is in `f64`, so no size can overflow it.
pub fn estimate(cfg: &CocaConfig, workload: &Workload) -> MemoryEstimate {
    let v = &cfg.vision_cfg;
    let t = &cfg.text_cfg;
    let m = &cfg.multimodal_cfg;
    let f = |n: usize| n as f64;
    let (gh, gw) = v.grid();
    let (ph, pw) = v.patch_size.hw();
    let image_tokens = f(gh * gw + 1);
    let embed = f(cfg.embed_dim);
    let vision = 3.0 * f(ph * pw) * f(v.width)
        + image_tokens * f(v.width)
        + f(v.layers) * block(f(v.width), f(v.mlp_width()))
        + f(v.attn_pooler_queries) * embed
        + 4.0 * embed * embed;
    let text = f(t.vocab_size) * f(t.width)
        + f(t.context_length) * f(t.width)
        + f(t.layers) * block(f(t.width), f(t.mlp_width()))
        + f(t.width) * embed;
    // Every decoder layer is a self-attention block and a cross-attention block.
    let decoder =
        f(m.layers) * 2.0 * block(f(m.width), f(m.mlp_width())) + f(m.width) * f(m.vocab_size);
    let towers = [
        (
            vision,
            format!("vision_cfg (layers {}, width {})", v.layers, v.width),
        ),
        (
            text,
            format!(
                "text_cfg (layers {}, width {}, vocab_size {})",
                t.layers, t.width, t.vocab_size
            ),
        ),
        (
            decoder,
            format!(
                "multimodal_cfg (layers {}, width {}, vocab_size {})",
                m.layers, m.width, m.vocab_size
            ),
        ),
    ];
    let parameters = vision + text + decoder;
    let largest_tower = towers
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name.clone())
        .unwrap_or_default();

    let batch = f(workload.batch.max(1));
    let image_context = f(cfg.image_context_tokens());
    let per_layer = [
        (
            f(v.layers),
            block_activations(
                batch,
                image_tokens,
                image_tokens,
                f(v.width),
                f(v.mlp_width()),
                f(v.heads()),
            ),
        ),
        (
            f(t.layers),
            block_activations(
                batch,
                f(t.context_length),
                f(t.context_length),
                f(t.width),
                f(t.mlp_width()),
                f(t.heads),
            ),
        ),
        (
            f(m.layers),
            block_activations(
                batch,
                f(m.context_length),
                f(m.context_length) + image_context,
                f(m.width),
                f(m.mlp_width()),
                f(m.heads),
            ),
        ),
    ];
    let bytes = f(workload.dtype_bytes);
    let activation_elements = if workload.training {
        per_layer
            .iter()
            .map(|(layers, one)| layers * one)
            .sum::<f64>()
    } else {
        per_layer.iter().map(|(_, one)| *one).fold(0.0, f64::max)
    };
    let copies = if workload.training { 2.0 } else { 1.0 };
    MemoryEstimate {
        parameters,
        parameter_bytes: parameters * bytes * copies,
        activation_bytes: activation_elements * bytes,
        largest_tower,
    }
}

/// Bytes this process can still allocate: the smaller of the kernel's `MemAvailable` and what the
/// address-space limit (`RLIMIT_AS`) leaves beyond the current address space. `None` where neither can be
/// read (not Linux).
pub fn available_memory() -> Option<u64> {
    let kib = |text: &str, key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let value: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(value * 1024)
    };
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
    let available = read("/proc/meminfo").and_then(|t| kib(&t, "MemAvailable:"));
    let address_space_left = (|| {
        let limits = read("/proc/self/limits")?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max address space"))?;
        let soft: u64 = line["Max address space".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let used = kib(&read("/proc/self/status")?, "VmSize:")?;
        Some(soft.saturating_sub(used))
    })();
    match (available, address_space_left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Binary gigabytes, for messages.
fn gib(bytes: f64) -> String {
    let g = bytes / (1u64 << 30) as f64;
    if g >= 10.0 {
        format!("{g:.0} GiB")
    } else {
        format!("{g:.2} GiB")
    }
}

/// Refuses `cfg` for `workload` when even the lower-bound [`estimate`] exceeds [`available_memory`] on the
/// host. Call it after [`CocaConfig::validate`] and before loading or initialising weights.
///
/// # Errors
///
/// [`ModelError::Limit`] naming the config, its largest tower, the bytes needed and the bytes available.
pub fn check_fits(cfg: &CocaConfig, source: &ConfigSource, workload: &Workload) -> Result<()> {
    if !workload.device.is_cpu() {
        return Ok(());
    }
    let Some(available) = available_memory() else {
        return Ok(());
    };
    check_against(cfg, source, workload, available)
}

fn check_against(
    cfg: &CocaConfig,
    source: &ConfigSource,
    workload: &Workload,
    available: u64,
) -> Result<()> {
    let e = estimate(cfg, workload);
    let needed = e.parameter_bytes + e.activation_bytes;
    if needed <= available as f64 {
        return Ok(());
    }
    let weights = if workload.training {
        "its weights and their gradients"
    } else {
        "its weights"
    };
    Err(ModelError::Limit {
        origin: source.to_string(),
        reason: format!(
            "would need at least {} ({:.3e} parameters, mostly {}): {} for {weights} and {} for the activations \
             of a batch of {}; {} {} available",
            gib(needed),
            e.parameters,
            e.largest_tower,
            gib(e.parameter_bytes),
            gib(e.activation_bytes),
            workload.batch.max(1),
            gib(available as f64),
            if available == 1 { "is" } else { "are" },
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(batch: usize, training: bool) -> Workload {
        Workload {
            batch,
            dtype_bytes: 4,
            training,
            device: Device::Cpu,
        }
    }

    #[test]
    fn b32_estimate_is_close_to_its_parameter_count() {
        let cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        let e = estimate(&cfg, &workload(1, false));
        // open_clip's coca_ViT-B-32 has 253.6M parameters; the estimate leaves out biases and norms.
        assert!((240e6..=254e6).contains(&e.parameters), "{}", e.parameters);
        let trained = estimate(&cfg, &workload(8, true));
        assert_eq!(trained.parameter_bytes, 2.0 * e.parameter_bytes);
        assert!(trained.activation_bytes > 8.0 * e.activation_bytes);
    }

    #[test]
    fn a_model_too_large_is_refused_with_its_cost() {
        let mut cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        cfg.vision_cfg.layers = 256;
        cfg.vision_cfg.width = 16_384;
        let src = ConfigSource::File("huge.json".into());
        let msg = check_against(&cfg, &src, &workload(1, false), 8 << 30)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("huge.json"), "{msg}");
        assert!(
            msg.contains("vision_cfg (layers 256, width 16384)"),
            "{msg}"
        );
        assert!(msg.contains("8.00 GiB are available"), "{msg}");
        let cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        check_against(&cfg, &src, &workload(1, false), 8 << 30).unwrap();
    }

    #[test]
    fn this_process_can_read_its_available_memory() {
        if cfg!(target_os = "linux") {
            assert!(available_memory().is_some_and(|b| b > 0));
        } else {
            eprintln!("skipped: /proc is Linux-only");
        }
    }
}
