//! Datasets and inputs: CIFAR-10 in its official binary layout, folders of labelled photos,
//! downloads, photos for `infer`.

/// Training augmentations of photos (torchvision's RandomResizedCrop and flip, the paper's scale
/// augmentation), seeded.
pub mod augment;
/// CIFAR-10 binary files: reading, validation, batches with augmentation.
pub mod cifar;
/// HTTP downloads into a cache with a progress bar, checksum and atomic rename.
pub mod download;
/// Folders of labelled photos (`DIR/<class>/<image>`, as torchvision's `ImageFolder`).
pub mod folder;
/// Photos: decoding, EXIF orientation, torchvision's eval preprocessing.
pub mod image;
/// Batches of a folder of photos decoded and augmented on worker threads ahead of the GPU.
pub mod loader;
