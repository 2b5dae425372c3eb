//! naga validation of a kernel's WGSL and the reflection of its bindings.

use anyhow::{Result, anyhow};

use super::Kernel;

/// Parses and validates a kernel's WGSL with naga.
pub fn validate(kernel: Kernel) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(kernel.source())
        .map_err(|e| anyhow!("{}.wgsl: {}", kernel.name(), e.emit_to_string(kernel.source())))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::SUBGROUP)
        .validate(&module)
        .map_err(|e| anyhow!("{}.wgsl: {}", kernel.name(), e.emit_to_string(kernel.source())))?;
    Ok((module, info))
}

/// What one binding of a kernel is, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Storage { read_only: bool },
    Uniform,
}

/// The bindings of group 0, read from the WGSL; binding numbers must be 0, 1, 2, ...
pub fn slots(kernel: Kernel) -> Result<Vec<Slot>> {
    let (module, _) = validate(kernel)?;
    let mut slots: Vec<(u32, Slot)> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            assert_eq!(binding.group, 0, "{}.wgsl: all bindings live in group 0", kernel.name());
            let slot = match var.space {
                naga::AddressSpace::Storage { access } => {
                    Slot::Storage { read_only: !access.contains(naga::StorageAccess::STORE) }
                }
                naga::AddressSpace::Uniform => Slot::Uniform,
                other => panic!("{}.wgsl: unexpected address space {other:?}", kernel.name()),
            };
            Some((binding.binding, slot))
        })
        .collect();
    slots.sort_by_key(|(binding, _)| *binding);
    for (i, (binding, _)) in slots.iter().enumerate() {
        assert_eq!(*binding as usize, i, "{}.wgsl: bindings must be numbered 0, 1, 2, ...", kernel.name());
    }
    Ok(slots.into_iter().map(|(_, slot)| slot).collect())
}
