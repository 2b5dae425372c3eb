//! `bench`: FLOP counts against published figures, the JSON schema, `bench compare`, per-layer
//! times against whole-step times, the wall-clock path of adapters without timestamps, and the
//! peak microbenchmark's WGSL. The GPU tests run on `common::gpus()`, one at a time, so that
//! their timings do not share the CPU with each other.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::gpus;
use resnet_wgpu::bench::{
    self, Config, Kind, Mode, Peak, Report, Timer, Timing, block_of, flop_per_image, forward_macs, percentile,
};
use resnet_wgpu::model::{Arch, Shortcut};
use serde_json::Value;

/// Held by every test that times something.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn within(what: &str, got: f64, want: f64, tolerance: f64) {
    let off = (got - want).abs() / want;
    assert!(off <= tolerance, "{what}: {got:.4e}, published {want:.4e}, off by {:.2}%", 100.0 * off);
}

#[test]
fn peak_kernel_parses_and_validates_with_naga() {
    let module = naga::front::wgsl::parse_str(bench::PEAK_FMA_WGSL)
        .unwrap_or_else(|e| panic!("peak_fma: {}", e.emit_to_string(bench::PEAK_FMA_WGSL)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("peak_fma: {}", e.emit_to_string(bench::PEAK_FMA_WGSL)));
    // Its CPU twin converges to the chains' fixed point c / (1 - b) = 1 each.
    assert!((bench::peak_fma_reference(5, 10_000) - 8.0).abs() < 1e-3);
}

#[test]
fn imagenet_macs_match_published_figures() {
    // GMAC of one 224x224 image, convs and fc: the commonly quoted figures, and torchvision's own
    // listing of its weights (its "GFLOPS" are multiply-adds).
    let published = [(18, 1.82, 1.81), (34, 3.67, 3.66), (50, 4.11, 4.09), (101, 7.83, 7.80), (152, 11.56, 11.51)];
    for (depth, gmac, torchvision) in published {
        let arch = Arch::parse(&format!("resnet{depth}"), Shortcut::B).unwrap();
        let macs = forward_macs(&arch) as f64;
        within(&format!("resnet{depth} MACs"), macs, gmac * 1e9, 0.02);
        within(&format!("resnet{depth} MACs (torchvision)"), macs, torchvision * 1e9, 0.02);
    }
}

#[test]
fn cifar_macs_match_published_figures() {
    for (model, mmac) in [("resnet20", 40.6), ("resnet56", 125.0), ("resnet110", 253.0)] {
        let arch = Arch::parse(model, Shortcut::A).unwrap();
        within(&format!("{model} MACs"), forward_macs(&arch) as f64, mmac * 1e6, 0.02);
    }
    // The plain twin has the same convs; option B adds two 1x1 projections.
    let macs = |name: &str, shortcut| forward_macs(&Arch::parse(name, shortcut).unwrap());
    assert_eq!(macs("plain20", Shortcut::A), macs("resnet20", Shortcut::A));
    let projections = 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8;
    assert_eq!(macs("resnet20", Shortcut::B), macs("resnet20", Shortcut::A) + projections);
}

#[test]
fn counted_convs_are_the_models_conv_weights() {
    // bench counts convs from the paper's rules, independently of the planner: the shapes must
    // still be those of the model's conv weights, in order.
    for (name, shortcut) in [
        ("resnet18", Shortcut::B),
        ("resnet50", Shortcut::B),
        ("resnet152", Shortcut::B),
        ("resnet20", Shortcut::A),
        ("resnet20", Shortcut::B),
        ("plain32", Shortcut::A),
    ] {
        let arch = Arch::parse(name, shortcut).unwrap();
        let weights: Vec<Vec<usize>> =
            arch.parameters().into_iter().filter(|(_, s)| s.len() == 4).map(|(_, s)| s).collect();
        let counted: Vec<Vec<usize>> = bench::convs(&arch).iter().map(|c| vec![c.k, c.c, c.r, c.r]).collect();
        assert_eq!(counted, weights, "{name} with shortcut {shortcut:?}");
    }
    // ResNet-50's last stage runs at 7x7.
    let last = bench::convs(&Arch::parse("resnet50", Shortcut::B).unwrap()).pop().unwrap();
    assert_eq!((last.p, last.q), (7, 7));
}

#[test]
fn a_training_step_counts_three_forwards() {
    let arch = Arch::parse("resnet50", Shortcut::B).unwrap();
    let forward = 2.0 * forward_macs(&arch) as f64;
    assert_eq!(flop_per_image(&arch, Mode::Infer), forward);
    assert_eq!(flop_per_image(&arch, Mode::Train), 3.0 * forward);
}

#[test]
fn percentiles_interpolate_between_samples() {
    let v = [4.0, 1.0, 3.0, 2.0];
    assert_eq!(percentile(&v, 0.5), 2.5);
    assert_eq!(percentile(&v, 0.0), 1.0);
    assert_eq!(percentile(&v, 1.0), 4.0);
    assert!((percentile(&v, 0.1) - 1.3).abs() < 1e-12);
    assert_eq!(percentile(&[7.0], 0.9), 7.0);
}

#[test]
fn layer_labels_roll_up_to_blocks() {
    assert_eq!(block_of("layer2.0.conv1"), "layer2.0");
    assert_eq!(block_of("layer3.12.downsample.0"), "layer3.12");
    assert_eq!(block_of("layer1.0.relu"), "layer1.0");
    for stem in ["conv1", "bn1", "relu", "maxpool"] {
        assert_eq!(block_of(stem), "stem");
    }
    assert_eq!(block_of("fc"), "head");
    assert_eq!(block_of("loss"), "loss");
    assert_eq!(block_of("sgd"), "optimizer");
}

/// A report as `bench --json` writes it, with one result per (model, mode, batch, ms).
fn synthetic_report(adapter: &str, results: &[(&str, &str, usize, f64)]) -> String {
    let results: Vec<Value> = results
        .iter()
        .map(|&(model, mode, batch, ms)| {
            serde_json::json!({
                "model": model, "shortcut": "a", "mode": mode, "batch": batch,
                "median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.1,
                "images_per_s": batch as f64 * 1e3 / ms, "flop_per_image": 8.1e7,
                "gflops": 1.0, "pct_peak": 1.0, "gbs": 1.0, "pct_bandwidth": 1.0,
                "memory_bytes": 1 << 20, "layers": [],
            })
        })
        .collect();
    serde_json::json!({
        "tool_version": "0.1.0",
        "adapter": {"name": adapter, "vendor": "Mesa", "backend": "vulkan", "device_type": "cpu",
                    "driver": "llvmpipe", "software": true},
        "peak": {"fp32_gflops": 30.0, "bandwidth_gbs": 10.0},
        "timer": "timestamps", "warmup": 1, "iters": 5,
        "results": results,
    })
    .to_string()
}

#[test]
fn compare_gives_no_ratio_over_a_zero_figure() {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-bench-zero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let mut zero: Value =
        serde_json::from_str(&synthetic_report("stalled GPU", &[("resnet20", "train", 32, 400.0)])).unwrap();
    zero["results"][0]["images_per_s"] = 0.0.into();
    std::fs::write(&a, zero.to_string()).unwrap();
    std::fs::write(&b, synthetic_report("fast GPU", &[("resnet20", "train", 32, 200.0)])).unwrap();
    let table = bench::compare_files(&[a, b]).unwrap();
    let line = table.lines().find(|l| l.starts_with("| resnet20 ")).unwrap_or_else(|| panic!("no row in\n{table}"));
    let ratio = line.split('|').map(str::trim).rfind(|c| !c.is_empty());
    assert_eq!(ratio, Some("-"), "{line}");
}

#[test]
fn compare_puts_files_side_by_side_with_ratios_to_the_first() {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-bench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    std::fs::write(
        &a,
        synthetic_report("slow GPU", &[("resnet20", "train", 32, 400.0), ("resnet20", "infer", 32, 100.0)]),
    )
    .unwrap();
    // b: an array of one report (as --all-adapters writes), twice as fast on the shared row.
    let b_doc = format!(
        "[{}]",
        synthetic_report("fast GPU", &[("resnet20", "train", 32, 200.0), ("resnet18", "infer", 1, 5.0)])
    );
    std::fs::write(&b, b_doc).unwrap();

    let table = bench::compare_files(&[a.clone(), b.clone()]).unwrap();
    eprintln!("{table}");
    assert!(table.contains("slow GPU") && table.contains("fast GPU"), "the legend names both adapters");
    let row = |model: &str, mode: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {model} ")) && l.contains(&format!(" {mode} ")))
            .unwrap_or_else(|| panic!("no row for {model} {mode} in\n{table}"));
        line.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
    };
    // model, mode, batch, A ms, A images/s, B ms, B images/s, B/A
    assert_eq!(row("resnet20", "train"), ["resnet20", "train", "32", "400", "80.0", "200", "160", "2.00x"]);
    assert_eq!(row("resnet20", "infer"), ["resnet20", "infer", "32", "100", "320", "-", "-", "-"]);
    assert_eq!(row("resnet18", "infer"), ["resnet18", "infer", "1", "-", "-", "5.00", "200", "-"]);

    // The same through the command line.
    let out =
        Command::new(env!("CARGO_BIN_EXE_resnet-wgpu")).arg("bench").arg("compare").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), table);

    std::fs::write(&b, "{\"not\": \"a report\"}").unwrap();
    let error = bench::compare_files(&[a, b]).unwrap_err();
    assert!(format!("{error:#}").contains("not a `bench --json` report"), "{error:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether a JSON value has the right type (and range).
type Check = fn(&Value) -> bool;

fn assert_keys(what: &str, v: &Value, keys: &[(&str, Check)]) {
    let object = v.as_object().unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    for (key, is_type) in keys {
        let value = object.get(*key).unwrap_or_else(|| panic!("{what} lacks \"{key}\": {v}"));
        assert!(is_type(value), "{what}.{key} has the wrong type: {value}");
    }
}

const KINDS: [&str; 7] =
    ["conv_forward", "conv_backward_input", "conv_backward_weight", "batchnorm", "elementwise", "optimizer", "other"];

/// Checks a report's JSON against the schema documented on `bench::Report`.
fn assert_schema(doc: &Value) {
    let string: Check = Value::is_string;
    let number: Check = |v| v.as_f64().is_some_and(f64::is_finite);
    let count: Check = Value::is_u64;
    assert_keys(
        "report",
        doc,
        &[
            ("tool_version", string),
            ("adapter", Value::is_object),
            ("peak", Value::is_object),
            ("timer", |v| v == "timestamps" || v == "wall_clock"),
            ("warmup", count),
            ("iters", count),
            ("results", Value::is_array),
        ],
    );
    assert_keys(
        "adapter",
        &doc["adapter"],
        &[
            ("name", string),
            ("vendor", string),
            ("backend", string),
            ("device_type", string),
            ("driver", string),
            ("software", Value::is_boolean),
        ],
    );
    let positive: Check = |v| v.as_f64().is_some_and(|x| x > 0.0 && x.is_finite());
    assert_keys("peak", &doc["peak"], &[("fp32_gflops", positive), ("bandwidth_gbs", positive)]);
    for result in doc["results"].as_array().unwrap() {
        assert_keys(
            "result",
            result,
            &[
                ("model", string),
                ("shortcut", |v| v == "a" || v == "b" || v == "plain"),
                ("mode", |v| v == "train" || v == "infer"),
                ("batch", count),
                ("median_ms", positive),
                ("p10_ms", positive),
                ("p90_ms", positive),
                ("images_per_s", positive),
                ("flop_per_image", positive),
                ("gflops", positive),
                ("pct_peak", positive),
                ("gbs", positive),
                ("pct_bandwidth", positive),
                ("memory_bytes", |v| v.as_u64().is_some_and(|b| b > 0)),
                ("encode_ms", positive),
                ("tuning_s", |v| v.as_f64().is_some_and(|x| x >= 0.0 && x.is_finite())),
                ("layers", Value::is_array),
            ],
        );
        for layer in result["layers"].as_array().unwrap() {
            assert_keys(
                "layer",
                layer,
                &[
                    ("name", string),
                    ("kind", |v| v.as_str().is_some_and(|k| KINDS.contains(&k))),
                    ("ms", number),
                    ("bytes", count),
                    ("kernels", |v| v.as_array().is_some_and(|k| !k.is_empty() && k.iter().all(Value::is_string))),
                ],
            );
        }
    }
}

#[test]
fn report_json_has_the_documented_keys_and_types() {
    let _serial = serial();
    for gpu in gpus() {
        let configs = [Config::new("resnet8", Mode::Train, 2), Config::new("resnet8", Mode::Infer, 2)];
        let options = Timing { warmup: 1, iters: 3, per_layer: true, timer: Timer::best(gpu) };
        let report = bench::bench_adapter(gpu, &configs, &options).unwrap();
        assert_eq!(report.results.len(), 2, "both configurations ran on {}", gpu.info.name);
        let doc = serde_json::to_value(&report).unwrap();
        assert_schema(&doc);
        let back: Report = serde_json::from_value(doc).unwrap();
        for m in &back.results {
            assert!(m.p10_ms <= m.median_ms && m.median_ms <= m.p90_ms, "{m:?}");
            within("images/s", m.images_per_s, m.batch as f64 * 1e3 / m.median_ms, 1e-9);
            within("GFLOP/s", m.gflops, m.flop_per_image * m.batch as f64 / m.median_ms / 1e6, 1e-9);
            if report.timer == Timer::Timestamps {
                assert!(!m.layers.is_empty(), "per-layer times with timestamps on {}", gpu.info.name);
            }
        }
        // Training holds parameters, gradients, velocity and twice the activations of inference.
        assert!(back.results[0].memory_bytes > back.results[1].memory_bytes);
        let tables = bench::human_tables(&[back]);
        assert!(tables.contains("| resnet8 ") && tables.contains("per-layer GPU time"), "{tables}");
    }
}

#[test]
fn per_layer_times_sum_to_about_the_whole_step() {
    let _serial = serial();
    let peak = Peak { fp32_gflops: 1.0, bandwidth_gbs: 1.0 };
    for gpu in gpus() {
        assert_eq!(Timer::best(gpu), Timer::Timestamps, "the test adapters have timestamp queries");
        let options = Timing { warmup: 1, iters: 5, per_layer: true, timer: Timer::Timestamps };
        let m = bench::measure(gpu, &Config::new("resnet8", Mode::Train, 8), &options, &peak).unwrap();
        let sum: f64 = m.layers.iter().map(|l| l.ms).sum();
        eprintln!("{}: layers sum to {sum:.2} ms, the step took {:.2} ms", gpu.info.name, m.median_ms);
        assert!(
            (0.5..=1.5).contains(&(sum / m.median_ms)),
            "on {} ({:?}) the layers sum to {sum} ms but the whole step took {} ms",
            gpu.info.name,
            gpu.info.backend,
            m.median_ms
        );
        // Every conv of the plan is timed: forward, backward-input (all but the stem's), backward-weight.
        let count = |kind| m.layers.iter().filter(|l| l.kind == kind).count();
        assert_eq!(
            (count(Kind::ConvForward), count(Kind::ConvBackwardInput), count(Kind::ConvBackwardWeight)),
            (7, 6, 7)
        );
        assert_eq!(count(Kind::Optimizer), 1);
        assert!(m.layers.iter().any(|l| l.name == "layer2.0.conv1"));
        // Each pass names the kernels that ran it, with their constants.
        for l in m.layers.iter().filter(|l| l.kind == Kind::ConvBackwardWeight) {
            assert!(l.kernels[0].starts_with("conv2d_backward_weight"), "{l:?}");
        }
    }
}

#[test]
fn without_timestamps_whole_steps_are_timed_by_the_wall_clock() {
    let _serial = serial();
    for gpu in gpus() {
        let peak = bench::measure_peak(gpu, Timer::WallClock).unwrap();
        assert!(peak.fp32_gflops > 0.0 && peak.bandwidth_gbs > 0.0);
        let options = Timing { warmup: 0, iters: 2, per_layer: true, timer: Timer::WallClock };
        let m = bench::measure(gpu, &Config::new("resnet8", Mode::Infer, 2), &options, &peak).unwrap();
        assert!(m.median_ms > 0.0 && m.images_per_s > 0.0);
        assert!(m.layers.is_empty(), "no per-layer times without timestamps");
    }
}

#[test]
fn json_to_stdout_leaves_nothing_else_there() {
    let _serial = serial();
    let backends = std::env::var("RESNET_WGPU_TEST_BACKENDS").unwrap_or_else(|_| "vulkan,gl".into());
    let backend = backends.split(',').next().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"))
        .args(["bench", "--json", "-", "--backend", backend, "--model", "resnet8", "--batch", "2", "--mode", "infer"])
        .args(["--warmup", "0", "--iters", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_schema(&doc);
    assert_eq!(doc["results"][0]["model"], "resnet8");
    assert!(stderr.contains("self-check"), "progress goes to stderr: {stderr}");
}

#[test]
fn adapters_json_lists_what_matters() {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu")).args(["adapters", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let adapters = doc["adapters"].as_array().unwrap();
    assert!(!adapters.is_empty());
    for a in adapters {
        for key in ["name", "vendor", "device_type", "backend", "driver", "timestamp_query", "shader_f16", "subgroups"]
        {
            assert!(a.get(key).is_some(), "adapter entry lacks {key}: {a}");
        }
        for key in [
            "max_storage_buffer_binding_size",
            "max_compute_workgroup_storage_size",
            "max_compute_invocations_per_workgroup",
        ] {
            assert!(a[key].is_u64(), "adapter entry lacks the limit {key}: {a}");
        }
    }
    assert!(doc["selected"].as_u64().is_some_and(|i| (i as usize) < adapters.len()));
}

#[test]
fn unknown_models_are_refused_before_any_adapter_is_opened() {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"))
        .args(["bench", "--model", "resnet21", "--backend", "nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("6n+2"), "{stderr}");
}

#[test]
fn the_loader_is_timed_for_each_worker_count() {
    let root = common::temp_dir("bench-decode");
    let folder = std::sync::Arc::new(common::photo_folder(&root));
    let spec = resnet_wgpu::data::loader::BatchSpec {
        batch: 4,
        size: 32,
        augment: resnet_wgpu::data::augment::Augment::Standard,
        mean: [0.5; 3],
        std: [0.25; 3],
        seed: 0,
        strict: true,
    };
    let rates = bench::decode_rates(folder, &spec, &[1, 2], 3).unwrap();
    assert_eq!(rates.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert!(rates.iter().all(|r| r.1.is_finite() && r.1 > 0.0), "{rates:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"))
        .args(["bench", "decode", "--workers", "1,2", "--batches", "2", "--batch", "4", "--size", "32"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.contains("workers:") && l.contains("images/s")).count(), 2, "{stdout}");
}
