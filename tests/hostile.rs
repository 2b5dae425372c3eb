//! Inputs a careless or hostile user may give: numeric flags out of range are refused when the
//! command line is parsed, naming the flag; networks too large for the adapter are refused before
//! anything is built, with the figures (batches: `tests/plan_errors.rs`); weights files that repeat a name, hold
//! integers or non-finite values are refused naming the tensor; a run whose weights turn
//! non-finite writes nothing, and a fresh run moves an earlier log aside instead of truncating it;
//! a download cut short resumes where it stopped, and one that trickles ends at its deadline.

mod common;

use std::process::Command;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{gpus, read_head, synthetic, temp_dir};
use resnet_wgpu::checkpoint::Checkpoint;
use resnet_wgpu::data::download::{Checksum, download_within};
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::train::{self, Outputs, Recipe, Schedule, Start};
use sha2::{Digest, Sha256};

/// Runs the binary with `args`; returns its exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn numeric_flags_out_of_range_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["eval", "cifar10", "--model", "resnet20", "--weights", "w.safetensors", "--batch-size", "0"],
            "--batch-size",
            "at least 1",
        ),
        (&["infer", "cat.jpg", "--resize", "0"], "--resize", "1..=4096"),
        (&["infer", "cat.jpg", "--top", "0"], "--top", "at least 1"),
        (&["train", "cifar10", "--lr=-0.1"], "--lr", "above 0"),
        (&["train", "cifar10", "--lr", "NaN"], "--lr", "finite"),
        (&["train", "cifar10", "--momentum", "1"], "--momentum", "[0, 1)"),
        (&["train", "cifar10", "--weight-decay=-1e-4"], "--weight-decay", "at least 0"),
        (&["train", "cifar10", "--epochs", "0"], "--epochs", "above 0"),
        (&["train", "cifar10", "--steps", "0"], "--steps", "at least 1"),
        (&["train", "cifar10", "--eval-every", "0"], "--eval-every", "at least 1"),
        (&["train", "cifar10", "--std", "0.2,0,0.2"], "--std", "above 0"),
        (&["train", "cifar10", "--mean", "0.5,0.5"], "--mean", "three"),
        (&["bench", "--batch", "8,0"], "--batch", "at least 1"),
        (&["bench", "--iters", "0"], "--iters", "at least 1"),
        (&["reproduce", "figure6", "--steps", "0"], "--steps", "at least 1"),
        (&["reproduce", "table6", "--test-images=-3"], "--test-images", "whole number"),
    ];
    for (args, flag, says) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: exit code {code:?}, stderr: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{args:?}: the error does not name {flag} and {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn networks_too_large_are_refused_before_they_are_built() {
    let gpu = &gpus()[0];
    // 10^17 blocks a stage: listing its layers alone would take gigabytes.
    let huge = Arch::cifar("resnet600000000000000002", Shortcut::A).unwrap();
    let error = format!("{:#}", ResNet::new(gpu, huge).err().expect("a network of 10^22 parameters was built"));
    assert!(error.contains("resnet600000000000000002 has") && error.contains("parameters"), "{error}");
}

/// A safetensors file with this header (tensor names to dtype, shape and offsets) and data.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn weights_files_that_repeat_a_name_or_hold_integers_or_non_finite_values_are_refused() {
    let dir = temp_dir("hostile-weights");
    let tensor = |dtype: &str, begin: usize| {
        format!(r#"{{"dtype":"{dtype}","shape":[2],"data_offsets":[{begin},{}]}}"#, begin + 8)
    };
    let twice = dir.join("twice.safetensors");
    let header = format!(r#"{{"fc.bias":{},"fc.bias":{}}}"#, tensor("F32", 0), tensor("F32", 8));
    std::fs::write(&twice, safetensors(&header, &[0; 16])).unwrap();
    let message = format!("{:#}", Checkpoint::read(&twice).unwrap_err());
    assert!(message.contains("twice.safetensors lists tensor fc.bias twice"), "{message}");

    let integers = dir.join("integers.safetensors");
    std::fs::write(&integers, safetensors(&format!(r#"{{"fc.bias":{}}}"#, tensor("I32", 0)), &[0; 8])).unwrap();
    let ck = Checkpoint::read(&integers).unwrap();
    let message = format!("{:#}", ck.check(&[("fc.bias".into(), vec![2])], "resnet8", &integers).unwrap_err());
    assert!(message.contains("fc.bias holds I32 values") && message.contains("floating-point"), "{message}");

    let gpu = &gpus()[0];
    let model = ResNet::new(gpu, Arch::cifar("resnet8", Shortcut::A).unwrap()).unwrap();
    let mut ck = model.checkpoint(gpu, true).unwrap();
    ck.tensors.get_mut("layer2.0.conv1.weight").unwrap().1[5] = f32::NAN;
    let message = format!("{:#}", model.restore(gpu, &ck, false, Path::new("nan.safetensors")).unwrap_err());
    assert!(message.contains("nan.safetensors: layer2.0.conv1.weight holds NaN at index 5"), "{message}");
    ck.tensors.get_mut("layer2.0.conv1.weight").unwrap().1[5] = 0.0;
    ck.tensors.get_mut("optimizer.velocity.fc.bias").unwrap().1[3] = f32::INFINITY;
    let message = format!("{:#}", model.restore(gpu, &ck, true, Path::new("inf.safetensors")).unwrap_err());
    assert!(message.contains("optimizer.velocity.fc.bias holds inf at index 3"), "{message}");
}

#[test]
fn non_finite_weights_are_never_written_and_earlier_logs_are_kept() {
    let gpu = &gpus()[0];
    let (train_set, test_set) = (synthetic(64, 5), synthetic(20, 6));
    let dir = temp_dir("hostile-train");
    let out = Outputs { save: None, checkpoint_dir: dir.clone(), eval_every: Some(1), json_log: None };
    let calm = Recipe { steps: 2, batch_size: 16, lr: 0.01, schedule: Schedule::Constant, ..Recipe::paper("resnet8") };
    train::train(gpu, &calm, &train_set, &test_set, Start::Fresh, &out).unwrap();
    let (log, last) =
        (std::fs::read(dir.join("log.jsonl")).unwrap(), std::fs::read(dir.join("last.safetensors")).unwrap());

    // One step at an infinite lr: its own loss is finite, the weights after it are not.
    let wild = Recipe { lr: f32::INFINITY, ..calm };
    let message = format!(
        "{:#}",
        train::train(gpu, &wild, &train_set, &test_set, Start::Fresh, &out).err().expect("it diverges")
    );
    assert!(
        message.contains("training diverged:") && message.contains("at step 1;") && message.contains("holds"),
        "{message}"
    );
    assert_eq!(std::fs::read(dir.join("last.safetensors")).unwrap(), last, "the last checkpoint was replaced");
    assert_eq!(std::fs::read(dir.join("log.1.jsonl")).unwrap(), log, "the first run's log was not kept aside");
}

/// Serves one connection per entry of `answers` in turn: reads the request, records its head,
/// and writes the answer in pieces, `pause` apart; returns the request heads.
fn serve_pieces(answers: Vec<Vec<Vec<u8>>>, pause: Duration) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/file.bin", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for pieces in answers {
            let (mut stream, _): (TcpStream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let request = read_head(&mut stream);
            heads.push(String::from_utf8_lossy(&request).to_lowercase());
            for piece in pieces {
                if stream.write_all(&piece).and_then(|_| stream.flush()).is_err() {
                    break;
                }
                std::thread::sleep(pause);
            }
        }
        heads
    });
    (url, thread)
}

#[test]
fn a_download_cut_short_resumes_and_a_trickling_one_ends_at_its_deadline() {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    let checksum = Checksum::Sha256Prefix(digest[..16].into());
    let dir = temp_dir("hostile-download");

    // The first connection promises the whole body and breaks off after 40,000 bytes.
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let rest = "HTTP/1.1 206 Partial Content\r\nContent-Length: 60000\r\nContent-Range: bytes 40000-99999/100000\r\n\
                Connection: close\r\n\r\n";
    let answers =
        vec![vec![head.into_bytes(), body[..40_000].to_vec()], vec![rest.as_bytes().to_vec(), body[40_000..].to_vec()]];
    let (url, server) = serve_pieces(answers, Duration::ZERO);
    let dest = dir.join("file.bin");
    download_within(&url, &dest, &checksum, Duration::from_secs(60)).unwrap();
    assert!(std::fs::read(&dest).unwrap() == body, "the resumed download differs from the body");
    let heads = server.join().unwrap();
    assert!(!heads[0].contains("range:") && heads[1].contains("range: bytes=40000-"), "{heads:?}");

    // One byte every 100 ms of 1,000 promised: the one-second deadline ends it.
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n".as_bytes().to_vec();
    let trickle: Vec<Vec<u8>> = std::iter::once(head).chain((0..30).map(|_| vec![0u8])).collect();
    let (url, server) = serve_pieces(vec![trickle], Duration::from_millis(100));
    let slow = dir.join("slow.bin");
    let message = format!("{:#}", download_within(&url, &slow, &checksum, Duration::from_secs(1)).unwrap_err());
    assert!(message.contains(&url) && message.to_lowercase().contains("timeout"), "{message}");
    assert!(!slow.exists() && !dir.join("slow.bin.part").exists(), "a partial file was left behind");
    server.join().unwrap();
}
