// fuse-conv-bn-relu: conv + batch_norm + relu; conv + per-channel mul/add + residual add + relu;
// conv + SiLU; a conv whose result has two uses stays alone ("conv") and its consumers stay outside.
// RUN: %dsc opt %s -p fuse-conv-bn-relu | %filecheck %s
// RUN: %dsc opt %s -p 'fuse-conv-bn-relu{device="cuda:0"}' | %filecheck %s --check-prefix=DEV

// CHECK:      %[[K0:.*]] = kernel.fused(%x, %w, %s, %b, %m, %v) {sym_name = "k0_conv_bn_relu", pattern = "conv_bn_relu", device = "cpu", sources = ["/c1/Conv", "/bn1/BatchNormalization", "/r1/Relu"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.conv
// CHECK-NEXT:   graph.batch_norm
// CHECK-NEXT:   graph.relu
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[K1:.*]] = kernel.fused(%[[K0]], %w, %cs, %cb, %x) {sym_name = "k1_conv_add_relu", pattern = "conv_add_relu", device = "cpu", sources = ["/c2/Conv", "/bn2/Mul", "/bn2/Add", "/res/Add", "/r2/Relu"]}
// CHECK:      %[[K2:.*]] = kernel.fused(%[[K1]], %w) {sym_name = "k2_conv_bn_relu", pattern = "conv_bn_relu", device = "cpu", sources = ["/c3/Conv", "/silu/Sigmoid", "/silu/Mul"]}
// CHECK:      %[[K3:.*]] = kernel.fused(%[[K2]], %w) {sym_name = "k3_conv", pattern = "conv", device = "cpu", sources = ["/c4/Conv"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.conv
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[R:.*]] = graph.relu %[[K3]]
// CHECK-NEXT: %[[S:.*]] = graph.sigmoid %[[K3]]
// CHECK-NEXT: func.return %[[R]], %[[S]]

// DEV-COUNT-4: device = "cuda:0"

func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<4x4x3x3xf32>, %s: tensor<4xf32>, %b: tensor<4xf32>, %m: tensor<4xf32>, %v: tensor<4xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) {
  %cs = graph.constant dense<[[[2.0]], [[3.0]], [[4.0]], [[5.0]]]> : tensor<4x1x1xf32>
  %cb = graph.constant dense<[[[1.0]], [[1.0]], [[1.0]], [[1.0]]]> : tensor<4x1x1xf32>
  %0 = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x8x8xf32> loc("/c1/Conv")
  %1 = graph.batch_norm %0, %s, %b, %m, %v {epsilon = 1.0e-05 : f32} : (tensor<1x4x8x8xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32> loc("/bn1/BatchNormalization")
  %2 = graph.relu %1 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/r1/Relu")
  %3 = graph.conv %2, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x8x8xf32> loc("/c2/Conv")
  %4 = graph.mul %3, %cs : (tensor<1x4x8x8xf32>, tensor<4x1x1xf32>) -> tensor<1x4x8x8xf32> loc("/bn2/Mul")
  %5 = graph.add %4, %cb : (tensor<1x4x8x8xf32>, tensor<4x1x1xf32>) -> tensor<1x4x8x8xf32> loc("/bn2/Add")
  %6 = graph.add %5, %x : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/res/Add")
  %7 = graph.relu %6 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/r2/Relu")
  %8 = graph.conv %7, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x8x8xf32> loc("/c3/Conv")
  %9 = graph.sigmoid %8 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/silu/Sigmoid")
  %10 = graph.mul %8, %9 : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/silu/Mul")
  %11 = graph.conv %10, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x8x8xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x8x8xf32> loc("/c4/Conv")
  %12 = graph.relu %11 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/r4/Relu")
  %13 = graph.sigmoid %11 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/s4/Sigmoid")
  func.return %12, %13 : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>
}
