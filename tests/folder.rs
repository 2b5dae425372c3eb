//! Scanning a folder of labelled photos as torchvision's `ImageFolder` does, its errors, and the
//! seeded validation split. The tests write the folders (empty files: only paths are read).

mod common;

use std::path::Path;

use common::temp_dir;
use resnet_wgpu::data::folder::{ImageFolder, ValSplit};

fn touch(root: &Path, files: &[&str]) {
    for file in files {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
}

fn error(dir: &Path) -> String {
    format!("{:#}", ImageFolder::scan_dataset(dir).expect_err("the folder must be refused"))
}

#[test]
fn classes_and_images_are_listed_in_torchvisions_order() {
    let root = temp_dir("folder-scan");
    touch(
        &root,
        &["dog/y.bmp", "dog/x.webp", "cat/b.PNG", "cat/a.jpg", "cat/notes.txt", "cat/sub/c.jpeg", "ant/z.tif"],
    );
    // A link from a class folder back to itself is followed once, not forever.
    std::os::unix::fs::symlink(root.join("ant"), root.join("ant/again")).unwrap();
    let (folder, val) = ImageFolder::scan_dataset(&root).unwrap();
    assert!(val.is_none());
    assert_eq!(folder.classes, ["ant", "cat", "dog"]);
    let listed: Vec<(String, u32)> =
        folder.images.iter().map(|(p, l)| (p.strip_prefix(&root).unwrap().display().to_string(), *l)).collect();
    let want = [
        ("ant/z.tif", 0),
        ("cat/a.jpg", 1),
        ("cat/b.PNG", 1),
        ("cat/sub/c.jpeg", 1),
        ("dog/x.webp", 2),
        ("dog/y.bmp", 2),
    ];
    assert_eq!(listed, want.map(|(p, l)| (p.to_string(), l)));
    assert_eq!(folder.counts(), [1, 3, 2]);
}

#[test]
fn train_and_val_folders_are_read_and_must_agree() {
    let root = temp_dir("folder-trainval");
    touch(&root, &["train/a/1.jpg", "train/b/2.jpg", "val/a/3.jpg", "val/b/4.jpg"]);
    let (train, val) = ImageFolder::scan_dataset(&root).unwrap();
    assert_eq!((train.images.len(), val.unwrap().images.len()), (2, 2));
    touch(&root, &["val/c/5.jpg"]);
    let message = error(&root);
    assert!(message.contains("different classes") && message.contains("only in val: [\"c\"]"), "{message}");
}

#[test]
fn folders_a_classifier_cannot_learn_from_are_refused_naming_them() {
    let root = temp_dir("folder-bad");
    let missing = error(&root.join("nowhere"));
    assert!(missing.contains("cannot read the image folder") && missing.contains("nowhere"), "{missing}");
    touch(&root, &["loose.jpg"]);
    assert!(error(&root).contains("holds no class folders"), "{}", error(&root));
    touch(&root, &["only/1.jpg"]);
    assert!(error(&root).contains("holds one class folder (only)"), "{}", error(&root));
    touch(&root, &["empty/readme.txt"]);
    let message = error(&root);
    assert!(
        message.contains("class folder") && message.contains("empty") && message.contains("holds no images"),
        "{message}"
    );
}

#[test]
fn the_split_holds_out_a_share_of_every_class_by_seed() {
    let root = temp_dir("folder-split");
    let names: Vec<String> =
        (0..20).map(|i| format!("a/{i:02}.jpg")).chain((0..5).map(|i| format!("b/{i}.png"))).collect();
    touch(&root, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let folder = ImageFolder::scan(&root).unwrap();

    let (train, val) = folder.split("0.2".parse().unwrap(), 7).unwrap();
    assert_eq!((train.counts(), val.counts()), (vec![16, 4], vec![4, 1]));
    let mut union = [train.images.clone(), val.images.clone()].concat();
    union.sort();
    assert_eq!(union, folder.images, "the two parts are the whole, without overlap");
    assert_eq!(folder.split(ValSplit::Fraction(0.2), 7).unwrap(), (train.clone(), val.clone()), "the same seed");
    assert_ne!(folder.split(ValSplit::Fraction(0.2), 8).unwrap().1, val, "another seed");

    let (_, val) = folder.split("5".parse().unwrap(), 0).unwrap();
    assert_eq!(val.counts(), [4, 1]);
    assert!("1.5".parse::<ValSplit>().is_err() && "-1".parse::<ValSplit>().is_err());
    let message = format!("{:#}", folder.split(ValSplit::Count(25), 0).unwrap_err());
    assert!(message.contains("cannot hold out 25 images"), "{message}");
}
