// The one tfjs instance every Topiary package uses. Plugins import `tf` from `@topiary/core` so that
// tensors, variables and registered kernels are shared (two copies of tfjs would not see each other's
// backends). The package root is imported because tfjs's ESM build uses extension-less deep imports.
import * as tf from '@tensorflow/tfjs';

export { tf };
export type Tensor = tf.Tensor;
export type Scalar = tf.Scalar;
export type Tensor1D = tf.Tensor1D;
export type Tensor2D = tf.Tensor2D;
export type Tensor3D = tf.Tensor3D;
export type Tensor4D = tf.Tensor4D;
export type Variable = tf.Variable;
