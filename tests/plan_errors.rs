//! Mistakes a caller can make fail at plan time with a sentence naming what mismatched.

mod common;

use common::gpus;
use resnet_wgpu::gpu::Gpu;
use resnet_wgpu::kernels::Dispatch;
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::ops::conv::{self, select::ConvPath};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::ops::{batchnorm, linear};
use resnet_wgpu::plan::{TrainStep, Trained};

fn message<T>(result: anyhow::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_batch_too_large_for_the_adapter_names_the_buffer_and_the_limit() {
    for gpu in gpus() {
        let model = ResNet::new(gpu, Arch::cifar("resnet20", Shortcut::A).unwrap()).unwrap();
        let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
        let error = message(TrainStep::new(gpu, &model, 1 << 20, sgd, Trained::ALL));
        // Refused before anything is built: the stem's output is the largest activation.
        let fits = gpu.buffer_limit() / (4 * 16 * 32 * 32);
        assert!(error.contains("a batch of 1048576 needs 65536 MiB for resnet20's stem output"), "{error}");
        assert!(error.contains(&format!("the largest batch that fits is {fits}")), "{error}");
    }
}

#[test]
fn mismatched_shapes_are_named() {
    let gpu = &gpus()[0];
    let inp = gpu.zeros("inp", &[2, 3, 8, 8]).unwrap();
    let weight = gpu.zeros("weight", &[4, 5, 3, 3]).unwrap();
    let out = gpu.zeros("out", &[2, 4, 8, 8]).unwrap();
    let error = message(conv::conv2d_forward(gpu, &out, &inp, &weight, None, 1, 1));
    assert_eq!(error, "conv2d weight [4, 5, 3, 3] expects 5 input channels, the input [2, 3, 8, 8] has 3");
    let weight = gpu.zeros("weight", &[4, 3, 3, 3]).unwrap();
    let error = message(conv::conv2d_forward(gpu, &out, &inp, &weight, None, 2, 1));
    assert_eq!(error, "conv2d output has shape [2, 4, 8, 8], expected [2, 4, 4, 4]");
    // On the lanes path a 3x3 with pad 1 reads its weight as a panel.
    let lanes = ConvPath::Lanes.pin(gpu);
    let error = message(conv::conv2d_forward(&lanes, &out, &inp, &weight, None, 1, 1));
    assert_eq!(
        error,
        "conv2d_rows_lanes reads the conv weight [4, 3, 3, 3] as a panel (conv::conv2d_weight_panel); none was given"
    );
    let wrong = lanes.zeros("panel", &[8, 3, 3, 4]).unwrap();
    let error = message(conv::conv2d_backward_input(&lanes, &inp, &out, &weight, Some(&wrong), 1, 1, false));
    assert_eq!(error, "conv2d weight as a panel has shape [8, 3, 3, 4], expected [4, 3, 3, 4]");
    let labels = gpu.zeros("labels", &[3]).unwrap();
    let (logits, scalar) = (gpu.zeros("logits", &[2, 10]).unwrap(), gpu.zeros("loss", &[1]).unwrap());
    let error = message(linear::softmax_cross_entropy(gpu, &logits, &scalar, &scalar, &logits, &labels));
    assert_eq!(error, "labels has shape [3], expected [2]");
}

#[test]
fn unknown_models_are_refused() {
    assert!(message(Arch::cifar("resnet21", Shortcut::A)).contains("6n+2"));
    assert!(message(Arch::cifar("vgg16", Shortcut::A)).contains("unknown model \"vgg16\""));
    assert_eq!(Arch::cifar("plain56", Shortcut::A).unwrap().shortcut, Shortcut::Plain);
    assert_eq!(Arch::cifar("resnet110", Shortcut::B).unwrap().stages, [(18, 16), (18, 32), (18, 64)]);
    assert!(Arch::parse("resnet50", Shortcut::A).unwrap().imagenet);
}

/// The training forward of a batch norm of 700,000 x 1 channel of 2x2 values.
fn long_batchnorm_forward_train(gpu: &Gpu) -> anyhow::Result<Vec<Dispatch>> {
    let shape = [700_000, 1, 2, 2];
    let (inp, out) = (gpu.zeros("inp", &shape).unwrap(), gpu.zeros("out", &shape).unwrap());
    let channel: Vec<_> = (0..6).map(|_| gpu.zeros("channel", &[1]).unwrap()).collect();
    let [mean, rstd, rm, rv, weight, bias] = [0, 1, 2, 3, 4, 5].map(|i| &channel[i]);
    batchnorm::batchnorm_forward_train(gpu, &out, mean, rstd, rm, rv, &inp, weight, bias, None, None, false)
}

/// Where even 256 invocations a channel would walk it in more loop iterations than the adapter
/// runs before cutting loops short (`Gpu::loop_limit`), batch norm refuses at plan time.
#[test]
fn a_batch_norm_past_the_loop_limit_is_refused() {
    for gpu in gpus() {
        let result = long_batchnorm_forward_train(gpu);
        match gpu.loop_limit {
            Some(limit) => assert_eq!(
                message(result),
                format!(
                    "batch norm of [700000, 1, 4 values a plane] needs 32814 loop iterations per invocation, over half \
                     of the {limit} after which {} cuts loops short; use a smaller batch",
                    gpu.info.name
                )
            ),
            None => assert!(result.is_ok()),
        }
    }
}

/// Batch norm in chunks (`Gpu::bn_chunk`) refuses at plan time where walking a chunk would take an
/// invocation past half the adapter's loop limit.
#[test]
fn a_batch_norm_chunk_past_the_loop_limit_is_refused() {
    for gpu in gpus() {
        let gpu = &gpu.with_bn_workgroup(8).with_bn_chunk(Some(1 << 20));
        let result = long_batchnorm_forward_train(gpu);
        match gpu.loop_limit {
            Some(limit) => assert_eq!(
                message(result),
                format!(
                    "batch norm of [700000, 1, 4 values a plane] in chunks of 1048576 values needs 262144 loop \
                     iterations per invocation, over half of the {limit} after which {} cuts loops short; use a \
                     smaller batch or chunk",
                    gpu.info.name
                )
            ),
            None => assert!(result.is_ok()),
        }
    }
}

#[test]
fn lanes_variants_decline_for_the_reason_they_state() {
    use conv::select::{FORWARD, INPUT_GRADIENT, Role};
    use resnet_wgpu::kernels::Kernel;
    let params =
        |inp: [usize; 4], weight: [usize; 4], stride, pad| conv::ConvParams::new(&inp, &weight, stride, pad).unwrap();
    let variant = |table: &'static [conv::select::Variant], kernel| table.iter().find(|v| v.kernel == kernel).unwrap();
    let strided = variant(&FORWARD, Kernel::Conv2dStridedLanes);
    let odd = params([2, 8, 9, 9], [8, 8, 3, 3], 2, 1);
    assert_eq!(strided.admits(&odd, Role::Forward), Err("rows of 9 columns, an odd number".into()));
    let even = params([2, 8, 9, 10], [8, 8, 3, 3], 2, 1);
    assert_eq!(strided.admits(&even, Role::Forward), Ok(()));
    let rows = variant(&FORWARD, Kernel::Conv2dRowsLanes);
    assert_eq!(rows.admits(&even, Role::Forward), Err("not a 3x3 conv with stride 1 and pad 1".into()));
    let channels = variant(&INPUT_GRADIENT, Kernel::Conv2dPointwiseChannelsLanes);
    let projection = params([2, 256, 8, 8], [512, 256, 1, 1], 2, 0);
    let written = Role::InputGradient { accumulate: false };
    assert_eq!(channels.admits(&projection, written), Err("a strided input gradient written, not added".into()));
    assert_eq!(channels.admits(&projection, Role::InputGradient { accumulate: true }), Ok(()));
    let narrow = params([2, 16, 8, 8], [32, 16, 1, 1], 2, 0);
    assert_eq!(channels.admits(&narrow, Role::Forward), Err("32 output channels, fewer than 256".into()));
    let pointwise = variant(&FORWARD, Kernel::Conv2dPointwiseLanes);
    let plane = params([2, 8, 7, 7], [8, 8, 1, 1], 1, 0);
    assert_eq!(pointwise.admits(&plane, Role::Forward), Err("planes or channel counts not multiples of 4".into()));
}
