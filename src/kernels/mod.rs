//! Every WGSL kernel of `shaders/` (the kernel table), naga validation and binding reflection
//! (`reflect`), and prepared dispatches (`dispatch`).
//!
//! A kernel's bind group layout is read from its own WGSL with naga (binding order, storage
//! read/write access, the uniform), so the shader file is the one place that says what a kernel
//! binds. By convention bindings are: outputs, then inputs, then the `params` uniform last.

mod dispatch;
mod reflect;

pub use dispatch::{Dispatch, grid};
pub use reflect::{Slot, slots, validate};

macro_rules! kernels {
    ($($variant:ident => $stem:literal $(after $prelude:literal)?,)*) => {
        /// One variant per file in `shaders/`; the file stem is `Kernel::name`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel { $($variant,)* }

        impl Kernel {
            pub const ALL: &[Kernel] = &[$(Kernel::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $stem,)* }
            }

            /// The kernel's WGSL, after the file of `shaders/prelude/` it names if any (WGSL
            /// has no includes).
            pub fn source(self) -> &'static str {
                match self {
                    $(Kernel::$variant => concat!(
                        $(include_str!(concat!("../../shaders/prelude/", $prelude, ".wgsl")), "\n",)?
                        include_str!(concat!("../../shaders/", $stem, ".wgsl"))
                    ),)*
                }
            }
        }
    };
}

kernels! {
    Conv2dForward => "conv2d_forward",
    Conv2dForwardLanes => "conv2d_forward_lanes" after "lanes",
    Conv2dBackwardInput => "conv2d_backward_input",
    Conv2dBackwardInputLanes => "conv2d_backward_input_lanes" after "lanes",
    Conv2dBackwardInputStridedLanes => "conv2d_backward_input_strided_lanes" after "lanes",
    Conv2dBackwardWeight => "conv2d_backward_weight",
    Conv2dBackwardWeightLanes => "conv2d_backward_weight_lanes" after "lanes",
    Conv2dRowsLanes => "conv2d_rows_lanes" after "lanes",
    Conv2dStridedLanes => "conv2d_strided_lanes" after "lanes",
    Conv2dWeightPanel => "conv2d_weight_panel",
    Conv2dPointwiseLanes => "conv2d_pointwise_lanes" after "lanes",
    Conv2dPointwiseChannelsLanes => "conv2d_pointwise_channels_lanes" after "lanes",
    Conv2dBackwardWeightRowsLanes => "conv2d_backward_weight_rows_lanes" after "lanes",
    Conv2dBackwardWeightRowsVec4Lanes => "conv2d_backward_weight_rows_vec4_lanes" after "lanes",
    BatchnormForwardTrain => "batchnorm_forward_train",
    BatchnormForwardTrainVec4 => "batchnorm_forward_train_vec4",
    BatchnormForwardEval => "batchnorm_forward_eval",
    BatchnormForwardEvalVec4 => "batchnorm_forward_eval_vec4",
    BatchnormBackward => "batchnorm_backward",
    BatchnormBackwardVec4 => "batchnorm_backward_vec4",
    ReluBackward => "relu_backward",
    ReluBackwardVec4 => "relu_backward_vec4",
    ReluMask => "relu_mask",
    ReluMaskVec4 => "relu_mask_vec4",
    Add => "add",
    AddVec4 => "add_vec4",
    ShortcutAForward => "shortcut_a_forward",
    ShortcutABackward => "shortcut_a_backward",
    MaxpoolForward => "maxpool_forward",
    MaxpoolBackward => "maxpool_backward",
    AvgpoolForward => "avgpool_forward",
    AvgpoolBackward => "avgpool_backward",
    LinearForward => "linear_forward",
    LinearForwardVec4 => "linear_forward_vec4",
    LinearBackwardInput => "linear_backward_input",
    LinearBackwardInputVec4 => "linear_backward_input_vec4",
    LinearBackwardWeight => "linear_backward_weight",
    LinearBackwardWeightVec4 => "linear_backward_weight_vec4",
    SoftmaxCrossEntropy => "softmax_cross_entropy",
    Sgd => "sgd",
    SumSlices => "sum_slices",
}
