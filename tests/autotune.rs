//! The autotune: each pass of each layer shape is timed once, its choice kept in a file, and
//! plans built on those choices (a different path per pass and layer) still compute the same.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::gpus;
use resnet_wgpu::bench;
use resnet_wgpu::gpu::{Gpu, TuneCache, Tuning};
use resnet_wgpu::kernels::Kernel;
use resnet_wgpu::ops::conv::select::{ConvPath, TILES};
use resnet_wgpu::ops::conv::{self};
use serde_json::{Value, json};

fn temp_file(name: &str, backend: &Gpu) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-test-autotune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{:?}.json", backend.info.backend))
}

fn read(file: &PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

/// The file of an adapter that keeps `path` for the forward of the 3x3 conv `forward_kernel` plans.
fn table(adapter: &str, path: &str) -> Value {
    json!({
        "adapter": adapter,
        "version": env!("CARGO_PKG_VERSION"),
        "choices": { "forward N2 C4 H8 W8 K4 R3 S3 s1 p1": path },
    })
}

/// The kernel that runs the forward of a 3x3 conv [2,4,8,8] -> [2,4,8,8] on `gpu`, with its `BM`
/// override (0 where it has none).
fn forward_kernel(gpu: &Gpu) -> (Kernel, u32) {
    let (inp, out, weight) = (
        gpu.zeros("inp", &[2, 4, 8, 8]).unwrap(),
        gpu.zeros("out", &[2, 4, 8, 8]).unwrap(),
        gpu.zeros("w", &[4, 4, 3, 3]).unwrap(),
    );
    let params = conv::ConvParams::new(&inp.shape, &weight.shape, 1, 1).unwrap();
    let panel = conv::panel_for(gpu, &params, &weight, false).unwrap().map(|(panel, _)| panel);
    let dispatch = conv::conv2d_forward(gpu, &out, &inp, &weight, panel.as_ref(), 1, 1).unwrap();
    let bm = dispatch.overrides.iter().find(|(name, _)| name == "BM").map_or(0, |(_, v)| *v as u32);
    (dispatch.kernel, bm)
}

#[test]
fn each_pass_is_timed_once_and_plans_that_mix_the_paths_match_the_cpu() {
    for gpu in gpus() {
        let file = temp_file("mix", gpu);
        let _ = std::fs::remove_file(&file);
        bench::self_check(&gpu.with_tune_cache(file.clone())).unwrap();
        let timed = read(&file);
        assert_eq!(timed["adapter"], gpu.describe());
        let tiles = TILES.iter().map(|t| t.name);
        let names: Vec<&str> = ["direct", "lanes"].into_iter().chain(tiles).collect();
        let paths = timed["choices"].as_object().unwrap();
        for pass in ["forward N", "input gradient N", "weight gradient N"] {
            assert!(paths.keys().any(|k| k.starts_with(pass)), "no {pass}... entry in {timed}");
        }
        assert!(paths.values().all(|p| names.contains(&p.as_str().unwrap())), "{timed}");

        // Every path in turn, entry by entry: the layers of one plan run on different paths.
        let mut mixed = timed.clone();
        let paths: Vec<&str> = ConvPath::families(gpu)
            .into_iter()
            .filter(|f| *f != "tiled")
            .chain(["tiled 32x32x16 4x4", "tiled 64x64x8 8x8"])
            .collect();
        for (i, path) in mixed["choices"].as_object_mut().unwrap().values_mut().enumerate() {
            *path = paths[i % paths.len()].into();
        }
        std::fs::write(&file, serde_json::to_vec(&mixed).unwrap()).unwrap();
        bench::self_check(&gpu.with_tune_cache(file.clone())).unwrap();
        assert_eq!(read(&file), mixed, "a kept choice was timed again");
    }
}

#[test]
fn a_kept_choice_decides_the_kernel() {
    for gpu in gpus() {
        let file = temp_file("kept", gpu);
        for (path, want) in [("direct", (Kernel::Conv2dForward, 0)), ("tiled 32x32x16 4x4", (Kernel::Conv2dTiled, 32))]
        {
            std::fs::write(&file, table(&gpu.describe(), path).to_string()).unwrap();
            assert_eq!(forward_kernel(&gpu.with_tune_cache(file.clone())), want, "{path} kept");
        }
    }
}

#[test]
fn an_unreadable_or_foreign_file_is_timed_again_and_replaced() {
    for gpu in gpus() {
        let file = temp_file("foreign", gpu);
        for contents in ["{ not json".to_string(), table("another adapter", "direct").to_string()] {
            std::fs::write(&file, &contents).unwrap();
            forward_kernel(&gpu.with_tune_cache(file.clone()));
            let timed = read(&file);
            assert_eq!(timed["adapter"], gpu.describe(), "{contents} was not replaced");
            assert!(timed["choices"]["forward N2 C4 H8 W8 K4 R3 S3 s1 p1"].is_string(), "{timed}");
        }
    }
}

#[test]
fn past_the_budget_new_problems_run_their_default_untimed() {
    for gpu in gpus() {
        let file = temp_file("budget", gpu);
        let _ = std::fs::remove_file(&file);
        let spent = TuneCache::load(&gpu.info, file.clone()).budgeted(Duration::ZERO);
        let untimed = gpu.with_tuning(Tuning::Timed(Arc::new(spent)));
        let default = forward_kernel(&gpu.with_tuning(Tuning::Defaults));
        assert_eq!(forward_kernel(&untimed), default, "the default ran on {}", gpu.info.name);
        assert_eq!(untimed.tuning.seconds(), 0.0, "nothing was timed");
        assert!(!file.exists(), "nothing was kept: a later run times it");
    }
}
