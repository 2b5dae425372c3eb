//! `infer IMAGE...`: torchvision's ImageNet ResNets classify photos.

use anyhow::{Result, bail};

use crate::gpu::AdapterChoice;

#[derive(clap::Args, Debug)]
pub struct InferArgs {
    /// Photos to classify (JPEG, PNG, WebP, ...)
    #[arg(required = true)]
    pub images: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub adapter: AdapterChoice,
}

pub fn run(args: &InferArgs) -> Result<()> {
    bail!("infer is not written yet ({} images)", args.images.len())
}
