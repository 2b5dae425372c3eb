//! A training plan's SGD step after a change of learning rate (every step of a cosine schedule,
//! the paper's drops, a warm-up's end) still updates every parameter: the rewritten uniform keeps
//! the number of values to update.

mod common;

use common::{assert_close, f64s, gpus};
use resnet_wgpu::model::{Arch, ResNet, Shortcut};
use resnet_wgpu::ops::sgd::Sgd;
use resnet_wgpu::plan::{TrainStep, Trained};
use resnet_wgpu::rng::Rng;

#[test]
fn a_new_learning_rate_still_updates_every_parameter() {
    for gpu in gpus() {
        let model = ResNet::new(gpu, Arch::cifar("resnet8", Shortcut::A).unwrap()).unwrap();
        model.init(gpu, 7);
        let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
        let mut step = TrainStep::new(gpu, &model, 4, sgd, Trained::ALL).unwrap();
        let mut rng = Rng::new(3);
        gpu.write(&step.input, &rng.vec(step.input.len()));
        gpu.write(&step.labels, &[1u32, 3, 5, 7]);
        step.run(gpu, 0, 0.1).unwrap();
        let (params, velocity) =
            (gpu.read::<f32>(&model.params.all).unwrap(), gpu.read::<f32>(&model.velocity.all).unwrap());

        let lr = 0.05;
        step.run(gpu, 1, lr).unwrap();
        let grads = f64s(&gpu.read::<f32>(&model.grads.all).unwrap());
        let (params, velocity) = (f64s(&params), f64s(&velocity));
        let want_velocity: Vec<f64> =
            (0..params.len()).map(|i| 0.9 * velocity[i] + grads[i] + 1e-4 * params[i]).collect();
        let want_params: Vec<f64> = (0..params.len()).map(|i| params[i] - lr as f64 * want_velocity[i]).collect();
        let what = format!("resnet8 after a learning-rate change on {}", gpu.info.name);
        assert_close(
            &format!("{what}: velocity"),
            &gpu.read::<f32>(&model.velocity.all).unwrap(),
            &want_velocity,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("{what}: parameters"),
            &gpu.read::<f32>(&model.params.all).unwrap(),
            &want_params,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn every_schedule_gives_its_rates() {
    use resnet_wgpu::train::{Recipe, Schedule};
    let recipe = |schedule, lr_drops| Recipe { steps: 12, lr: 0.1, schedule, lr_drops, ..Recipe::paper("resnet20") };
    let rates = |r: &Recipe| (0..12).map(|s| r.lr_at(s)).collect::<Vec<f32>>();
    let (a, b, c) = (0.1f32, 0.1f32 / 10.0, 0.1f32 / 100.0);
    assert_eq!(rates(&recipe(Schedule::Paper, vec![])), [a, a, a, a, a, a, b, b, b, c, c, c]);
    assert_eq!(rates(&recipe(Schedule::Drops, vec![4, 8])), [[a; 4], [b; 4], [c; 4]].concat());
    assert_eq!(rates(&recipe(Schedule::Constant, vec![])), [a; 12]);
    let cosine = rates(&recipe(Schedule::Cosine, vec![]));
    assert!(cosine[0] == a && cosine.windows(2).all(|w| w[1] < w[0]) && cosine[11] < 0.002, "{cosine:?}");
}
