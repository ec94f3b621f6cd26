//! The backward pass in three stages, so that a stage's gradients can be communicated while the next stage
//! is still being differentiated.
//!
//! candle's `backward` differentiates a whole graph in one call and hands back every gradient at the end. To
//! let data-parallel training all-reduce the decoder's gradients while the towers are still being
//! differentiated (what PyTorch DDP's bucket hooks do), the forward cuts the graph where the towers hand over
//! to the rest of the model: their four outputs (image embedding and tokens, text embedding and token states)
//! are copied into fresh variables, and the decoder and the loss are built on those. The backward then runs:
//! 1. from the loss: the gradients of the decoder, `logit_scale`, and the four cut variables;
//! 2. from `Σ text outputs · their cut gradients`: the text tower's gradients;
//! 3. from `Σ image outputs · their cut gradients`: the vision tower's gradients.
//!
//! Stage 2 and 3 roots have, for every tower weight, the gradient of the loss (the chain rule at the cut), so
//! the gradients are those of a single backward; `x · g` passes `g` back unchanged, so even the rounding is
//! the same. The cost is a copy of the four cut tensors and one product per cut per micro-batch.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use coca_model::{Coca, ImageEncoding, TextEncoding, TrainOutput};

/// The parts of the model a backward stage completes, in the order the stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The multimodal decoder with its LM head, and `logit_scale`.
    Decoder,
    /// The unimodal text tower.
    Text,
    /// The vision tower with its attentional poolers.
    Vision,
}

impl Stage {
    /// The stage that completes the gradient of the parameter `name` (open_clip's names).
    pub fn of(name: &str) -> Stage {
        if name.starts_with("visual.") {
            Stage::Vision
        } else if name.starts_with("text.") {
            Stage::Text
        } else {
            Stage::Decoder
        }
    }
}

/// A forward pass whose graph is cut between the towers and the decoder (see the module docs).
pub struct StagedForward {
    /// What the loss needs, built on the cut variables.
    pub out: TrainOutput,
    text: Cut,
    image: Cut,
}

/// Tensors of a tower and the variables that stand in for them downstream.
struct Cut {
    outputs: [Tensor; 2],
    stand_ins: [Var; 2],
}

impl Cut {
    fn new(outputs: [Tensor; 2]) -> Result<Self> {
        let stand_ins = [
            Var::from_tensor(&outputs[0].detach())?,
            Var::from_tensor(&outputs[1].detach())?,
        ];
        Ok(Self { outputs, stand_ins })
    }

    /// The scalar whose backward gives the tower the gradients `store` holds for the stand-ins; `None` when
    /// the loss does not depend on them.
    fn root(&self, store: &GradStore) -> Result<Option<Tensor>> {
        let mut root: Option<Tensor> = None;
        for (output, stand_in) in self.outputs.iter().zip(&self.stand_ins) {
            if let Some(g) = store.get(stand_in.as_tensor()) {
                let term = (output * g.detach())?.sum_all()?;
                root = Some(match root {
                    Some(r) => (r + term)?,
                    None => term,
                });
            }
        }
        Ok(root)
    }
}

impl StagedForward {
    /// [`Coca::forward_for_loss`] with the graph cut after the towers.
    pub fn new(model: &Coca, images: &Tensor, ids: &Tensor) -> Result<Self> {
        let image = model.encode_image(images)?;
        let text = model.encode_text(ids)?;
        let image = Cut::new([image.embedding, image.tokens])?;
        let text = Cut::new([text.embedding, text.tokens])?;
        let out = model.forward_for_loss_from(
            &ImageEncoding {
                embedding: image.stand_ins[0].as_tensor().clone(),
                tokens: image.stand_ins[1].as_tensor().clone(),
            },
            &TextEncoding {
                embedding: text.stand_ins[0].as_tensor().clone(),
                tokens: text.stand_ins[1].as_tensor().clone(),
            },
            ids,
        )?;
        Ok(Self { out, text, image })
    }

    /// Backpropagate `objective` (a scalar built on [`StagedForward::out`]) stage by stage, handing each
    /// stage's gradients to `done` as soon as that stage is differentiated.
    pub fn backward(
        self,
        objective: &Tensor,
        mut done: impl FnMut(Stage, GradStore) -> Result<()>,
    ) -> Result<()> {
        let store = objective.backward()?;
        let text_root = self.text.root(&store)?;
        let image_root = self.image.root(&store)?;
        done(Stage::Decoder, store)?;
        if let Some(root) = text_root {
            done(Stage::Text, root.backward()?)?;
        }
        if let Some(root) = image_root {
            done(Stage::Vision, root.backward()?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_map_to_the_stage_that_completes_them() {
        assert_eq!(Stage::of("visual.conv1.weight"), Stage::Vision);
        assert_eq!(Stage::of("visual.attn_pool.query"), Stage::Vision);
        assert_eq!(Stage::of("text.token_embedding.weight"), Stage::Text);
        assert_eq!(Stage::of("text.cls_emb"), Stage::Text);
        assert_eq!(Stage::of("text_decoder.text_projection"), Stage::Decoder);
        assert_eq!(Stage::of("logit_scale"), Stage::Decoder);
    }
}
