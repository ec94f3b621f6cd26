//! A training forward cut into segments that are differentiated one after another, optionally recomputed.
//!
//! candle's `backward` differentiates a whole graph in one call and returns every gradient at the end, and
//! the graph keeps every activation alive until then. [`Segments`] cuts the graph at the input of every
//! residual block and where the towers hand their outputs over: the tensor at a cut is copied into a fresh
//! variable (its *stand-in*), and the model goes on from the stand-in. [`Segments::backward`] then
//! differentiates the objective, and afterwards each cut in reverse order of creation, from
//! `Σ tensor · gradient of its stand-in`: by the chain rule each pass gives the loss's gradients for the
//! weights of its segment and for the stand-ins further down. Two things follow:
//! - a weight's gradient is complete as soon as its segment has been differentiated, so data-parallel
//!   training can all-reduce it while the segments below are still to do (what PyTorch DDP's bucket hooks
//!   achieve);
//! - with [`SegmentMode::Recompute`] (open_clip's `--grad-checkpointing`) a residual block keeps only its input: its
//!   activations are dropped after the forward and recomputed, with their graph, when its turn comes in the
//!   backward. Activation memory falls from every block's intermediates to one tensor per block, for about
//!   one more forward pass of compute.
//!
//! `x · g` hands `g` back unchanged, and a recomputed block repeats the same operations on the same values, so
//! the gradients are those of a single backward; on the fixture model they are equal bit for bit
//! (`segmented_gradients_equal_one_backward`), though several contributions to one stand-in may in general
//! be added in another order. Tensors handed on together (a tower's embedding and tokens, which share its
//! pooler) are one cut, so the graph they share is differentiated once.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId, Var};

use crate::nn::block::{AllAtOnce, BlockRunner, ResidualAttentionBlock};

/// Where a training forward is cut, and what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentMode {
    /// No cuts: one graph, differentiated in one pass.
    Whole,
    /// Cuts at every block and tower output, every activation kept, plus the stand-ins: one more copy of each
    /// block's input until the backward reaches it.
    Cut,
    /// Cuts as [`SegmentMode::Cut`], with every residual block recomputed in the backward instead of keeping
    /// its activations (`--grad-checkpointing`).
    Recompute,
}

/// The cuts of one training forward; pass it as the [`BlockRunner`] of [`crate::Coca::forward_for_loss`],
/// then differentiate with [`Segments::backward`].
pub struct Segments {
    mode: SegmentMode,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// In order of creation.
    cuts: Vec<Cut>,
    /// Every stand-in's cut, by the stand-in's id.
    stand_ins: HashMap<TensorId, usize>,
}

/// Tensors of one segment handed on together: their gradients are propagated in one pass, so the graph they
/// share (a pooler that makes both the embedding and the caption context) is differentiated once.
struct Cut {
    stand_ins: Vec<Var>,
    source: Source,
}

/// What the stand-ins' gradients are propagated through.
enum Source {
    /// The tensors that were cut, with their graph.
    Kept(Vec<Tensor>),
    /// A residual block's output, recomputed from the stand-ins of its inputs.
    Recomputed(Box<dyn Fn() -> Result<Tensor>>),
}

impl Segments {
    /// An empty set of cuts in `mode`.
    pub fn new(mode: SegmentMode) -> Self {
        Self {
            mode,
            state: RefCell::new(State::default()),
        }
    }

    fn push(&self, stand_ins: Vec<Var>, source: Source) -> Vec<Tensor> {
        let mut state = self.state.borrow_mut();
        let index = state.cuts.len();
        let tensors: Vec<Tensor> = stand_ins.iter().map(|v| v.as_tensor().clone()).collect();
        for t in &tensors {
            state.stand_ins.insert(t.id(), index);
        }
        state.cuts.push(Cut { stand_ins, source });
        tensors
    }

    /// Differentiate `objective` (a scalar built on this forward's outputs), then every cut in reverse order,
    /// handing each pass's gradients to `done` as soon as they are computed. Every weight's gradient comes in
    /// the pass of the segment that uses it (in one pass only, unless the model shares a weight between
    /// segments).
    pub fn backward(
        self,
        objective: &Tensor,
        mut done: impl FnMut(&GradStore) -> Result<()>,
    ) -> Result<()> {
        let State { mut cuts, .. } = self.state.into_inner();
        // The gradients of the stand-ins, summed over the passes that reach them.
        let mut pending: Vec<Vec<Option<Tensor>>> =
            cuts.iter().map(|c| vec![None; c.stand_ins.len()]).collect();
        let store = objective.backward()?;
        collect(&mut pending, &cuts, &store)?;
        done(&store)?;
        drop(store);
        // Latest cut first; each is dropped after its pass, and with it the activations only it still holds.
        while let Some(cut) = cuts.pop() {
            let grads = pending.pop().unwrap_or_default();
            let sources: Vec<Tensor> = match &cut.source {
                Source::Kept(ts) => ts.clone(),
                Source::Recomputed(f) if grads.iter().any(Option::is_some) => vec![f()?],
                Source::Recomputed(_) => Vec::new(),
            };
            let mut root: Option<Tensor> = None;
            for (t, g) in sources.iter().zip(grads) {
                let Some(g) = g else { continue };
                let term = (t * g)?.sum_all()?;
                root = Some(match root {
                    Some(r) => (r + term)?,
                    None => term,
                });
            }
            let Some(root) = root else { continue };
            let store = root.backward()?;
            // A pass only reaches stand-ins created before its own: those of the cuts still in `cuts`.
            collect(&mut pending, &cuts, &store)?;
            done(&store)?;
        }
        Ok(())
    }
}

/// Add the gradients `store` holds for the stand-ins of `cuts` to `pending`.
fn collect(pending: &mut [Vec<Option<Tensor>>], cuts: &[Cut], store: &GradStore) -> Result<()> {
    for (slots, cut) in pending.iter_mut().zip(cuts) {
        for (slot, stand_in) in slots.iter_mut().zip(&cut.stand_ins) {
            if let Some(g) = store.get(stand_in.as_tensor()) {
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(prev) => (prev + g)?,
                    None => g,
                });
            }
        }
    }
    Ok(())
}

impl BlockRunner for Segments {
    fn cut(&self, ts: &[&Tensor]) -> Result<Vec<Tensor>> {
        if self.mode == SegmentMode::Whole {
            return AllAtOnce.cut(ts);
        }
        let known = {
            let state = self.state.borrow();
            ts.iter()
                .map(|t| state.stand_ins.contains_key(&t.id()))
                .collect::<Vec<_>>()
        };
        if known.iter().all(|&k| k) {
            return Ok(ts.iter().map(|&t| t.clone()).collect());
        }
        if known.iter().any(|&k| k) {
            candle_core::bail!("a cut mixes stand-ins with tensors that were not cut");
        }
        let stand_ins = ts
            .iter()
            .map(|t| Var::from_tensor(&t.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.push(
            stand_ins,
            Source::Kept(ts.iter().map(|&t| t.clone()).collect()),
        ))
    }

    fn run(
        &self,
        block: &ResidualAttentionBlock,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.mode == SegmentMode::Whole {
            return AllAtOnce.run(block, x, context, mask);
        }
        let x = self.cut_one(x)?;
        let context = context.map(|c| self.cut_one(c)).transpose()?;
        if self.mode == SegmentMode::Cut {
            return block.forward(&x, context.as_ref(), mask);
        }
        let output = block.forward(&x, context.as_ref(), mask)?;
        // Only the output's values stay; its graph (the block's activations) goes with `output`.
        let stand_in = Var::from_tensor(&output.detach())?;
        drop(output);
        let (block, mask) = (block.clone(), mask.cloned());
        let recompute = move || block.forward(&x, context.as_ref(), mask.as_ref());
        let mut out = self.push(vec![stand_in], Source::Recomputed(Box::new(recompute)));
        Ok(out.remove(0))
    }
}

impl Segments {
    fn cut_one(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = self.cut(&[t])?;
        Ok(out.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::nn::ops::tests::max_abs_diff;
    use crate::test_support::{batch, tiny};
    use crate::{coca_loss_fused, CocaLossConfig};

    /// Every weight's gradient arrives in exactly one pass, equal to the single backward's (bit for bit here;
    /// the tolerance allows for a different order of adding several contributions to one stand-in), with
    /// and without recomputation. The passes are one for the objective and one per cut that received a
    /// gradient.
    #[test]
    fn segmented_gradients_equal_one_backward() {
        let tiny = tiny();
        let (images, ids) = batch(3, 1);
        let cfg = CocaLossConfig::default();
        let out = tiny
            .model
            .forward_for_loss(&images, &ids, &AllAtOnce)
            .unwrap();
        let reference = coca_loss_fused(&out, &cfg)
            .unwrap()
            .total
            .backward()
            .unwrap();
        let vars: Vec<(String, Var)> = tiny
            .vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for mode in [SegmentMode::Whole, SegmentMode::Cut, SegmentMode::Recompute] {
            let segments = Segments::new(mode);
            let out = tiny
                .model
                .forward_for_loss(&images, &ids, &segments)
                .unwrap();
            let loss = coca_loss_fused(&out, &cfg).unwrap().total;
            let mut grads = BTreeMap::new();
            let mut passes = 0;
            segments
                .backward(&loss, |store| {
                    passes += 1;
                    for (name, var) in &vars {
                        if let Some(g) = store.get(var.as_tensor()) {
                            assert!(
                                grads.insert(name.clone(), g.clone()).is_none(),
                                "{name} got gradients in two passes"
                            );
                        }
                    }
                    Ok(())
                })
                .unwrap();
            // Vision 2 blocks, text 2, decoder 2 × 2, plus the tower inputs and outputs.
            if mode == SegmentMode::Whole {
                assert_eq!(passes, 1);
            } else {
                assert!(passes > 8, "{mode:?}: {passes} passes");
            }
            for (name, var) in &vars {
                let want = reference.get(var.as_tensor());
                match (grads.get(name), want) {
                    (Some(got), Some(want)) => {
                        let diff = max_abs_diff(got, want);
                        let scale = max_abs_diff(want, &want.zeros_like().unwrap());
                        assert!(
                            diff <= 1e-6 * scale,
                            "{mode:?}: {name}: {diff} vs scale {scale}"
                        );
                    }
                    (None, None) => {}
                    (got, want) => panic!(
                        "{mode:?}: {name}: gradient {} here, {} in one backward",
                        got.is_some(),
                        want.is_some()
                    ),
                }
            }
        }
    }
}
