//! The model: its architecture (`arch`: one list of layers that every walk of the network uses)
//! and its tensors on the GPU (`resnet`).

mod arch;
mod resnet;

pub use arch::{Arch, BlockKind, BlockSpec, ConvSpec, STEM_POOL, Shortcut, ShortcutSpec};
pub use resnet::{Arena, ResNet};
