//! Every kernel, composed as the table in `src/kernels/mod.rs` composes it (its prelude parts, then its own
//! file), parses and validates with naga; every file in shaders/ and shaders/prelude/ is used by
//! the table; every kernel is named in the header of its file. Needs no GPU.
//!
//! The prelude parts are validated only inside the kernels that list them, not alone: a part may
//! call functions a kernel defines (the tile loop calls `load_a` and `load_b`), read its bindings
//! (the epilogue reads `bias`) and use its overrides (`WG_M`, `RELU`).

use std::collections::BTreeSet;

use resnet_wgpu::kernels::{Kernel, Slot, slots, validate};

/// The stems of the `.wgsl` files directly in `shaders/<folder>`.
fn stems(folder: &str) -> BTreeSet<String> {
    std::fs::read_dir(format!("{}/shaders/{folder}", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/shaders/{path}.wgsl", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_kernel_validates_after_its_prelude_parts() {
    for &kernel in Kernel::ALL {
        validate(kernel).unwrap();
    }
}

/// naga's pipeline-constant pass, which wgpu runs when it builds a pipeline, resolves every
/// kernel's overrides at their defaults. (naga 30 panics there when an array sized by an override
/// expression, other than a lone override, is declared before a named override that a later
/// module-scope expression uses; the table puts prelude parts before the kernel's overrides.)
#[test]
fn every_kernels_overrides_resolve() {
    for &kernel in Kernel::ALL {
        let (module, info) = validate(kernel).unwrap();
        let resolved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
        match resolved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: {e}", kernel.name()),
            Err(_) => panic!("{}: naga's pipeline-constant pass panicked (see above)", kernel.name()),
        }
    }
}

#[test]
fn every_shader_file_is_used_by_the_table() {
    let files: BTreeSet<String> = Kernel::ALL.iter().map(|k| k.file().to_string()).collect();
    assert_eq!(stems(""), files, "the files of shaders/ and the kernels' own files must be the same");
    let parts: BTreeSet<String> = Kernel::ALL.iter().flat_map(|k| k.parts()).map(|p| p.to_string()).collect();
    assert_eq!(
        stems("prelude"),
        parts,
        "the files of shaders/prelude/ and the parts the kernels list must be the same"
    );
    let names: BTreeSet<&str> = Kernel::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names.len(), Kernel::ALL.len(), "every kernel has a name of its own");
}

#[test]
fn every_kernel_is_named_in_its_files_header() {
    for &kernel in Kernel::ALL {
        let text = read(kernel.file());
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("//")).collect();
        assert!(
            header.iter().any(|l| l.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == kernel.name())),
            "{}: the header of shaders/{}.wgsl must name the kernel (formula, work split, shapes, dispatch)",
            kernel.name(),
            kernel.file()
        );
    }
    for part in stems("prelude") {
        assert!(read(&format!("prelude/{part}")).starts_with("//"), "prelude/{part}.wgsl: say what it holds first");
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
