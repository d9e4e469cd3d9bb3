// fuse-reductions: softmax with its scale and mask producers; a written-out LayerNorm
// (with the residual add before it and the scale/shift after it) as one kernel; reduce_sum
// with a single-use exp producer and an elementwise consumer; a layer_norm whose producer
// has another use takes only itself; a softmax used twice takes no consumer.
// RUN: %dsc opt %s -p fuse-reductions | %filecheck %s

// CHECK:      %[[K0:.*]] = kernel.fused(%s, %c8, %mask) {sym_name = "k0_reduction", pattern = "reduction", device = "cpu", sources = ["/attn/Div", "/attn/Add", "/attn/Softmax"]}
// CHECK:      %[[K1:.*]] = kernel.fused(%x, %[[K0]], %c2, %eps, %g, %b) {sym_name = "k1_reduction", {{.*}}sources = ["/res/Add", "/ln/ReduceMean", "/ln/Sub", "/ln/Pow", "/ln/ReduceMean_1", "/ln/Add", "/ln/Sqrt", "/ln/Div", "/ln/Mul", "/ln/Add_1"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.add
// CHECK-NEXT:   graph.reduce_mean
// CHECK-NEXT:   graph.sub
// CHECK-NEXT:   graph.pow
// CHECK-NEXT:   graph.reduce_mean
// CHECK-NEXT:   graph.add
// CHECK-NEXT:   graph.sqrt
// CHECK-NEXT:   graph.div
// CHECK-NEXT:   graph.mul
// CHECK-NEXT:   graph.add
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[K2:.*]] = kernel.fused(%[[K1]], %c8) {sym_name = "k2_reduction", {{.*}}sources = ["/sum/Exp", "/sum/ReduceSum", "/sum/Mul"]}
// CHECK:      %[[R:.*]] = graph.relu %x {{.*}}loc("/shared/Relu")
// CHECK-NEXT: %[[K3:.*]] = kernel.fused(%[[R]], %g, %b) {sym_name = "k3_reduction", {{.*}}sources = ["/ln2/LayerNormalization"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.layer_norm
// CHECK-NEXT:   kernel.yield
// CHECK:      func.return %[[K1]], %[[K2]], %[[K3]], %[[R]], %[[K0]]

func.func @main(%x: tensor<2x4x8xf32>, %s: tensor<2x4x8xf32>, %mask: tensor<1x1x8xf32>, %g: tensor<8xf32>, %b: tensor<8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x1xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) {
  %c8 = graph.constant dense<2.828427> : tensor<1xf32>
  %eps = graph.constant dense<1.0e-05> : tensor<1xf32>
  %c2 = graph.constant dense<2.0> : tensor<1xf32>
  %0 = graph.div %s, %c8 : (tensor<2x4x8xf32>, tensor<1xf32>) -> tensor<2x4x8xf32> loc("/attn/Div")
  %1 = graph.add %0, %mask : (tensor<2x4x8xf32>, tensor<1x1x8xf32>) -> tensor<2x4x8xf32> loc("/attn/Add")
  %2 = graph.softmax %1 {axis = 2 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32> loc("/attn/Softmax")
  %3 = graph.add %x, %2 : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32> loc("/res/Add")
  %4 = graph.reduce_mean %3 {axes = array<i64: 2>, keepdims = 1 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x1xf32> loc("/ln/ReduceMean")
  %5 = graph.sub %3, %4 : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32> loc("/ln/Sub")
  %6 = graph.pow %5, %c2 : (tensor<2x4x8xf32>, tensor<1xf32>) -> tensor<2x4x8xf32> loc("/ln/Pow")
  %7 = graph.reduce_mean %6 {axes = array<i64: 2>, keepdims = 1 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x1xf32> loc("/ln/ReduceMean_1")
  %8 = graph.add %7, %eps : (tensor<2x4x1xf32>, tensor<1xf32>) -> tensor<2x4x1xf32> loc("/ln/Add")
  %9 = graph.sqrt %8 : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32> loc("/ln/Sqrt")
  %10 = graph.div %5, %9 : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32> loc("/ln/Div")
  %11 = graph.mul %10, %g : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32> loc("/ln/Mul")
  %12 = graph.add %11, %b : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32> loc("/ln/Add_1")
  %13 = graph.exp %12 : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32> loc("/sum/Exp")
  %14 = graph.reduce_sum %13 {axes = array<i64: 2>, keepdims = 1 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x1xf32> loc("/sum/ReduceSum")
  %15 = graph.mul %14, %c8 : (tensor<2x4x1xf32>, tensor<1xf32>) -> tensor<2x4x1xf32> loc("/sum/Mul")
  %16 = graph.relu %x : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32> loc("/shared/Relu")
  %17 = graph.layer_norm %16, %g, %b {axis = 2 : i64, epsilon = 1.0e-05 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32> loc("/ln2/LayerNormalization")
  func.return %12, %15, %17, %16, %2 : tensor<2x4x8xf32>, tensor<2x4x1xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>
}
