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
    (@file $name:literal) => { $name };
    (@file $name:literal $file:literal) => { $file };
    ($($variant:ident => $name:literal $(from $file:literal)? $(after [$($part:literal),+])?,)*) => {
        /// One variant per kernel. Its source is the file of `shaders/` named `Kernel::file`: its
        /// name, or for the `_vec4` twin of a scalar kernel the source both share.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel { $($variant,)* }

        impl Kernel {
            pub const ALL: &[Kernel] = &[$(Kernel::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $name,)* }
            }

            /// The stem of the kernel's own file in `shaders/`.
            pub fn file(self) -> &'static str {
                match self { $(Kernel::$variant => kernels!(@file $name $($file)?),)* }
            }

            /// The stems of the files of `shaders/prelude/` that come before its own, in order.
            pub fn parts(self) -> &'static [&'static str] {
                match self { $(Kernel::$variant => &[$($($part),+)?],)* }
            }

            /// The kernel's WGSL: its prelude parts, then its own file (WGSL has no includes;
            /// module-scope names resolve in any order, so a part may call functions the kernel
            /// defines).
            pub fn source(self) -> &'static str {
                match self {
                    $(Kernel::$variant => concat!(
                        $($(include_str!(concat!("../../shaders/prelude/", $part, ".wgsl")), "\n",)+)?
                        include_str!(concat!("../../shaders/", kernels!(@file $name $($file)?), ".wgsl"))
                    ),)*
                }
            }
        }
    };
}

// Each kernel's source: its prelude parts (shaders/prelude/), in order, then its own file.
//   conv_params  the `params` uniform of every conv kernel
//   bn_params    the `params` uniform of every batch norm kernel
//   direct       the direct path's workgroup and block of outputs (conv2d_forward and its two gradients)
//   gemm         the entry of those whose direct path ends in a block of outputs (all but the weight gradient)
//   tiled        the tiled path's overrides, staging and double-buffered step loop (the `_tiled` kernels)
//   lanes        the subgroup broadcasts of the `_lanes` kernels and their 16-row multiply-adds
//   step4        a tap's reduction 4 channels a step (conv2d_forward_lanes, conv2d_backward_input_lanes)
//   weight_rows  where the two row-walking weight gradients write their columns
//   epilogue     the forward convs' fused bias, residual and ReLU (after f32 or vec4)
//   channels     batch norm's walk of a channel a workgroup and workgroup sum
//   chunks       how batch norm's two-level kernels cut a channel into chunks
//   bn_statistics  storing a channel's batch statistics and updating the running ones
//   bn_grad      the gradient reaching a batch norm's output (RELU) and its 1 / std (FROZEN)
//   row_walk     an invocation's row and columns, all of one or one (PER_ELEMENT): max pool, option-A shortcut
//   f32, vec4    the element width: a scalar kernel and its `_vec4` twin are one source (`from`)
kernels! {
    Conv2dForward => "conv2d_forward" after ["conv_params", "direct", "gemm", "f32", "epilogue"],
    Conv2dForwardLanes => "conv2d_forward_lanes" after ["conv_params", "lanes", "step4", "f32", "epilogue"],
    Conv2dBackwardInput => "conv2d_backward_input" after ["conv_params", "direct", "gemm"],
    Conv2dBackwardInputLanes => "conv2d_backward_input_lanes" after ["conv_params", "lanes", "step4"],
    Conv2dBackwardInputStridedLanes => "conv2d_backward_input_strided_lanes" after ["conv_params", "lanes"],
    Conv2dBackwardWeight => "conv2d_backward_weight" after ["conv_params", "direct"],
    Conv2dBackwardWeightLanes => "conv2d_backward_weight_lanes" after ["conv_params", "lanes"],
    Conv2dRowsLanes => "conv2d_rows_lanes" after ["conv_params", "lanes"],
    Conv2dStridedLanes => "conv2d_strided_lanes" after ["conv_params", "lanes"],
    Conv2dWeightPanel => "conv2d_weight_panel" after ["conv_params"],
    Conv2dTiled => "conv2d_tiled" after ["conv_params", "tiled", "f32", "epilogue"],
    Conv2dBackwardWeightTiled => "conv2d_backward_weight_tiled" after ["conv_params", "tiled"],
    Conv2dPointwiseLanes => "conv2d_pointwise_lanes" after ["conv_params", "lanes", "vec4", "epilogue"],
    Conv2dPointwiseChannelsLanes => "conv2d_pointwise_channels_lanes" after ["conv_params", "lanes", "f32", "epilogue"],
    Conv2dBackwardWeightRowsLanes => "conv2d_backward_weight_rows_lanes" after ["conv_params", "lanes", "weight_rows"],
    Conv2dBackwardWeightRowsVec4Lanes => "conv2d_backward_weight_rows_vec4_lanes" after ["conv_params", "lanes", "weight_rows"],
    BatchnormForwardTrain => "batchnorm_forward_train" after ["bn_params", "f32", "channels", "bn_statistics"],
    BatchnormForwardTrainVec4 => "batchnorm_forward_train_vec4" from "batchnorm_forward_train" after ["bn_params", "vec4", "channels", "bn_statistics"],
    BatchnormForwardChunks => "batchnorm_forward_chunks" after ["bn_params", "f32", "channels", "chunks"],
    BatchnormForwardChunksVec4 => "batchnorm_forward_chunks_vec4" from "batchnorm_forward_chunks" after ["bn_params", "vec4", "channels", "chunks"],
    BatchnormForwardCombine => "batchnorm_forward_combine" after ["bn_params", "f32", "channels", "chunks", "bn_statistics"],
    BatchnormForwardEval => "batchnorm_forward_eval" after ["bn_params", "f32"],
    BatchnormForwardEvalVec4 => "batchnorm_forward_eval_vec4" from "batchnorm_forward_eval" after ["bn_params", "vec4"],
    BatchnormBackward => "batchnorm_backward" after ["bn_params", "f32", "channels", "bn_grad"],
    BatchnormBackwardVec4 => "batchnorm_backward_vec4" from "batchnorm_backward" after ["bn_params", "vec4", "channels", "bn_grad"],
    BatchnormBackwardChunks => "batchnorm_backward_chunks" after ["bn_params", "f32", "channels", "chunks", "bn_grad"],
    BatchnormBackwardChunksVec4 => "batchnorm_backward_chunks_vec4" from "batchnorm_backward_chunks" after ["bn_params", "vec4", "channels", "chunks", "bn_grad"],
    BatchnormBackwardCombine => "batchnorm_backward_combine" after ["bn_params", "f32", "channels", "chunks"],
    BatchnormBackwardInput => "batchnorm_backward_input" after ["bn_params", "f32", "bn_grad"],
    BatchnormBackwardInputVec4 => "batchnorm_backward_input_vec4" from "batchnorm_backward_input" after ["bn_params", "vec4", "bn_grad"],
    ReluBackward => "relu_backward" after ["f32"],
    ReluBackwardVec4 => "relu_backward_vec4" from "relu_backward" after ["vec4"],
    ReluMask => "relu_mask" after ["f32"],
    ReluMaskVec4 => "relu_mask_vec4" from "relu_mask" after ["vec4"],
    Add => "add" after ["f32"],
    AddVec4 => "add_vec4" from "add" after ["vec4"],
    ShortcutAForward => "shortcut_a_forward" after ["row_walk"],
    ShortcutABackward => "shortcut_a_backward" after ["row_walk"],
    MaxpoolForward => "maxpool_forward" after ["row_walk"],
    MaxpoolBackward => "maxpool_backward" after ["row_walk"],
    AvgpoolForward => "avgpool_forward",
    AvgpoolBackward => "avgpool_backward",
    LinearForward => "linear_forward" after ["f32"],
    LinearForwardVec4 => "linear_forward_vec4" from "linear_forward" after ["vec4"],
    LinearBackwardInput => "linear_backward_input" after ["f32"],
    LinearBackwardInputVec4 => "linear_backward_input_vec4" from "linear_backward_input" after ["vec4"],
    LinearBackwardWeight => "linear_backward_weight" after ["f32"],
    LinearBackwardWeightVec4 => "linear_backward_weight_vec4" from "linear_backward_weight" after ["vec4"],
    SoftmaxCrossEntropy => "softmax_cross_entropy",
    Sgd => "sgd",
    SumSlices => "sum_slices",
}
