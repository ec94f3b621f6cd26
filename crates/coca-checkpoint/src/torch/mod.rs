//! Reading `torch.save` zip archives (`open_clip_pytorch_model.bin`).

mod archive;
mod pickle;
mod state_dict;

pub(crate) use archive::TorchArchive;
pub(crate) use state_dict::PickledTensor;
