//! Datasets and inputs: CIFAR-10 in its official binary layout, downloads, photos for `infer`.

/// CIFAR-10 binary files: reading, validation, batches with augmentation.
pub mod cifar;
/// HTTP downloads into a cache with a progress bar, checksum and atomic rename.
pub mod download;
/// Photos: decoding, EXIF orientation, torchvision's eval preprocessing.
pub mod image;
