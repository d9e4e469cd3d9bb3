// outline-kernels: every compute op left outside a kernel gets a kernel of its own ("single"),
// a graph.if moves in whole with the values its branches capture as inputs; constants and
// reshapes (views) stay outside; existing kernels are kept; all kernels are then renamed
// k<i>_<pattern> in program order.
// RUN: %dsc opt %s -p outline-kernels | %filecheck %s
// RUN: %dsc opt %s -p outline-kernels,outline-kernels | %filecheck %s

// CHECK:      %[[C:.*]] = graph.constant
// CHECK-NEXT: %[[KS:.*]] = kernel.fused(%x, %[[C]]) {sym_name = "k0_single", pattern = "single", device = "cpu", sources = ["/scale/Mul"]}
// CHECK:      %[[K0:.*]] = kernel.fused(%[[KS]]) {sym_name = "k1_single", pattern = "single", device = "cpu", sources = ["/pool/MaxPool"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.max_pool
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[K1:.*]] = kernel.fused(%[[K0]]) {sym_name = "k2_elementwise", pattern = "elementwise", device = "", sources = ["/a/Relu", "/a/Neg"]}
// CHECK:      %[[V:.*]] = graph.reshape %[[K1]] {{.*}}loc("/Flatten")
// CHECK-NEXT: %[[K2:.*]] = kernel.fused(%[[V]], %w) {sym_name = "k3_single", {{.*}}sources = ["/fc/Gemm"]}
// CHECK:      %[[K3:.*]] = kernel.fused(%flag, %[[K2]]) {sym_name = "k4_single", {{.*}}sources = ["/If", "/then/Relu", "/else/Neg"]}
// CHECK-NEXT: ^{{.*}}(%[[F:.*]]: tensor<1xi1>, %[[IN:.*]]: tensor<1x10xf32>):
// CHECK-NEXT:   "graph.if"(%[[F]])
// CHECK-NEXT:     graph.relu %[[IN]]
// CHECK:          graph.neg %[[IN]]
// CHECK:      func.return %[[K3]], %[[K1]]

func.func @main(%x: tensor<1x4x8x8xf32>, %w: tensor<10x64xf32>, %flag: tensor<1xi1>) -> (tensor<1x10xf32>, tensor<1x4x4x4xf32>) {
  %c = graph.constant dense<0.5> : tensor<1xf32>
  %xs = graph.mul %x, %c : (tensor<1x4x8x8xf32>, tensor<1xf32>) -> tensor<1x4x8x8xf32> loc("/scale/Mul")
  %0 = graph.max_pool %xs {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64} : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32> loc("/pool/MaxPool")
  %1 = kernel.fused(%0) {sym_name = "k9_elementwise", pattern = "elementwise", device = "", sources = ["/a/Relu", "/a/Neg"]} : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> {
  ^bb0(%a: tensor<1x4x4x4xf32>):
    %r = graph.relu %a : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> loc("/a/Relu")
    %n = graph.neg %r : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> loc("/a/Neg")
    kernel.yield %n : tensor<1x4x4x4xf32>
  }
  %2 = graph.reshape %1 : (tensor<1x4x4x4xf32>) -> tensor<1x64xf32> loc("/Flatten")
  %3 = graph.gemm %2, %w {alpha = 1.0 : f32, beta = 1.0 : f32, trans_a = 0 : i64, trans_b = 1 : i64} : (tensor<1x64xf32>, tensor<10x64xf32>) -> tensor<1x10xf32> loc("/fc/Gemm")
  %4 = "graph.if"(%flag) ({
    %t = graph.relu %3 : (tensor<1x10xf32>) -> tensor<1x10xf32> loc("/then/Relu")
    graph.yield %t : tensor<1x10xf32>
  }, {
    %e = graph.neg %3 : (tensor<1x10xf32>) -> tensor<1x10xf32> loc("/else/Neg")
    graph.yield %e : tensor<1x10xf32>
  }) : (tensor<1xi1>) -> tensor<1x10xf32> loc("/If")
  func.return %4, %1 : tensor<1x10xf32>, tensor<1x4x4x4xf32>
}
