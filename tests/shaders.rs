//! Every file in shaders/ parses and validates with naga and is known to `Kernel`; needs no GPU.

use resnet_wgpu::kernels::{Kernel, Slot, slots, validate};

#[test]
fn every_shader_file_is_a_kernel_and_validates() {
    let mut stems: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    let mut names: Vec<String> = Kernel::ALL.iter().map(|k| k.name().to_string()).collect();
    names.sort();
    assert_eq!(stems, names, "shaders/ and Kernel must list the same kernels");
    for &kernel in Kernel::ALL {
        validate(kernel).unwrap();
    }
}

#[test]
fn bindings_are_outputs_and_inputs_then_one_uniform() {
    for &kernel in Kernel::ALL {
        let slots = slots(kernel).unwrap();
        assert_eq!(slots.last(), Some(&Slot::Uniform), "{}: the params uniform comes last", kernel.name());
        let storage = &slots[..slots.len() - 1];
        // WebGPU's default is 8; Gpu::new asks for 9 (the fused batch norm kernels), which every
        // desktop and mobile driver offers, and names the adapter where it cannot.
        assert!(storage.len() <= 9, "{}: Gpu::new asks for 9 storage buffers per stage", kernel.name());
        let first_input = storage.iter().position(|s| *s == Slot::Storage { read_only: true }).unwrap_or(storage.len());
        assert!(first_input > 0, "{}: a kernel writes at least one output", kernel.name());
        assert!(
            storage[first_input..].iter().all(|s| *s == Slot::Storage { read_only: true }),
            "{}: outputs (read_write) come before inputs (read)",
            kernel.name()
        );
    }
}
