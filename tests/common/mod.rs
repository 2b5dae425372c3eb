//! Shared by the GPU tests: the adapters to test on, seeded random data and images, comparisons,
//! a local server and temporary folders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use resnet_wgpu::data::cifar::Cifar10;
use resnet_wgpu::gpu::{AdapterChoice, Gpu, Tuning};
use resnet_wgpu::ops::conv::select::ConvPath;

/// The backends every GPU test runs on: both adapters of the CI machine (lavapipe through Vulkan,
/// llvmpipe through GL) unless `RESNET_WGPU_TEST_BACKENDS` names others (e.g. `metal`).
/// A missing adapter fails the test with a message saying how to get one; nothing is skipped.
pub fn gpus() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let backends = std::env::var("RESNET_WGPU_TEST_BACKENDS").unwrap_or_else(|_| "vulkan,gl".into());
        backends
            .split(',')
            .map(|backend| {
                let gpu = Gpu::new(&AdapterChoice::backend(backend))
                    .unwrap_or_else(|e| panic!("GPU tests need an adapter on backend {backend}: {e:#}"));
                eprintln!("testing on {}", gpu.describe());
                gpu
            })
            .collect()
    })
}

/// Every test adapter once per conv path it can run (see `ConvPath`), so that all are checked
/// wherever the tests run.
pub fn conv_variants() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        gpus()
            .iter()
            .flat_map(|g| ConvPath::families(g).into_iter().map(|family| g.with_tuning(Tuning::Pinned(family))))
            .collect()
    })
}

/// Every test adapter with batch norm's training a channel per workgroup, of 8 invocations (CPU
/// adapters' default) and of 256, and in two levels (`Gpu::bn_chunk`): chunks of 4096 values with
/// 256 invocations (GPUs' default), and chunks of 44 values with 8, so that small shapes have
/// several chunks a channel, cut in the middle of rows. All are checked wherever the tests run.
pub fn bn_variants() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let settings = [(8, None), (256, None), (256, Some(4096)), (8, Some(44))];
        gpus().iter().flat_map(|g| settings.map(|(wg, chunk)| g.with_bn_workgroup(wg).with_bn_chunk(chunk))).collect()
    })
}

/// Every test adapter with the row-walking kernels (max pool, option-A shortcut) a row an
/// invocation (CPU adapters' default) and an element an invocation (GPUs'), so that both are
/// checked wherever the tests run.
pub fn per_element_variants() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| gpus().iter().flat_map(|g| [false, true].map(|on| g.with_per_element(on))).collect())
}

/// The adapter and work split of a `per_element_variants` entry, for messages.
pub fn per_element_variant(gpu: &Gpu) -> String {
    let split = if gpu.per_element { "an element" } else { "a row" };
    format!("on {} ({:?}; {split} an invocation)", gpu.info.name, gpu.info.backend)
}

/// The adapter and batch norm setting of a `bn_variants` entry, for messages.
pub fn bn_variant(gpu: &Gpu) -> String {
    let cut = match gpu.bn_chunk {
        None => "a channel".to_string(),
        Some(chunk) => format!("a chunk of {chunk} values"),
    };
    format!("on {} ({:?}; workgroups of {} reduce {cut})", gpu.info.name, gpu.info.backend, gpu.bn_workgroup)
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts |gpu - cpu| <= atol + rtol * |cpu| everywhere, naming the first element that is off.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f64], atol: f64, rtol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: {} values from the GPU, {} from the CPU", gpu.len(), cpu.len());
    if let Some(i) = resnet_wgpu::reference::first_off(gpu, cpu, atol, rtol) {
        let (g, c) = (gpu[i], cpu[i]);
        panic!("{what}: element {i} is {g} on the GPU, {c} on the CPU (bound {atol} + {rtol}*|cpu|)");
    }
}

/// Serves `body` to every GET on 127.0.0.1 (any path) until `requests` have been answered or
/// 20 s have passed; returns the base URL (ending in `/`) and the thread, which returns the paths requested.
pub fn serve(body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut paths = Vec::new();
        while paths.len() < requests && Instant::now() < deadline {
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let request = read_head(&mut stream);
            let line = String::from_utf8_lossy(&request).lines().next().unwrap_or("").to_string();
            paths.push(line.split(' ').nth(1).unwrap_or("").to_string());
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        }
        paths
    });
    (url, thread)
}

/// `n` noisy images of four classes told apart by colour (red, green, blue, grey): easily separable.
pub fn synthetic(n: usize, seed: u64) -> Cifar10 {
    const COLOURS: [[f64; 3]; 4] = [[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.5, 0.5, 0.5]];
    let mut rng = resnet_wgpu::rng::Rng::new(seed);
    let mut images = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.below(4);
        labels.push(c as u8);
        for level in COLOURS[c] {
            images.extend((0..1024).map(|_| (255.0 * (level + 0.2 * (rng.uniform() - 0.5)).clamp(0.0, 1.0)) as u8));
        }
    }
    Cifar10 { images, labels }
}

/// A fresh, empty folder for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The head of an HTTP request (up to the blank line), as far as the client sends it.
pub fn read_head(stream: &mut impl Read) -> Vec<u8> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    request
}

/// Three classes of 4 PNGs each, told apart by colour, of assorted sizes.
pub fn photo_folder(root: &std::path::Path) -> resnet_wgpu::data::folder::ImageFolder {
    for (c, colour) in [[200u8, 20, 20], [20, 200, 20], [20, 20, 200]].iter().enumerate() {
        for i in 0..4u32 {
            let dir = root.join(format!("class{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            image::RgbImage::from_pixel(20 + 7 * i, 30 - 3 * i, image::Rgb(*colour))
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    resnet_wgpu::data::folder::ImageFolder::scan(root).unwrap()
}
