// fuse-elementwise: a cast/sub/mul chain; a DAG with x*sigmoid(x) whose producer joins because
// both its uses are in the group; a broadcast_to heading a chain; a value with two consumers in
// different groups ends its group; a single-use producer of another shape (another iteration
// space) stays out; lone elementwise ops and non-elementwise ops are left for outline-kernels.
// RUN: %dsc opt %s -p fuse-elementwise | %filecheck %s

// CHECK:      %[[K0:.*]] = kernel.fused(%m, %one, %big) {sym_name = "k0_elementwise", pattern = "elementwise", device = "cpu", sources = ["/Cast", "/Sub", "/Mul"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.cast
// CHECK-NEXT:   graph.sub
// CHECK-NEXT:   graph.mul
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[K1:.*]] = kernel.fused(%x, %[[K0]]) {sym_name = "k1_elementwise", {{.*}}sources = ["/silu/Add", "/silu/Sigmoid", "/silu/Mul", "/silu/Neg"]}
// CHECK:      %[[K3:.*]] = kernel.fused(%[[K1]]) {sym_name = "k3_elementwise", {{.*}}sources = ["/c/Exp", "/c/Log"]}
// CHECK:      %[[K2:.*]] = kernel.fused(%[[K1]], %[[K0]]) {sym_name = "k2_elementwise", {{.*}}sources = ["/b/Tanh", "/b/Abs", "/b/Add"]}
// CHECK:      %[[N:.*]] = graph.neg %v {{.*}}loc("/small/Neg")
// CHECK-NEXT: %[[K4:.*]] = kernel.fused(%[[N]], %x) {sym_name = "k4_elementwise", {{.*}}sources = ["/Expand", "/e/Add", "/e/Relu"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.broadcast_to
// CHECK-NEXT:   graph.add
// CHECK-NEXT:   graph.relu
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[L:.*]] = graph.sqrt %x {{.*}}loc("/lone/Sqrt")
// CHECK-NEXT: %[[P:.*]] = graph.max_pool %[[L]]
// CHECK-NEXT: %[[R:.*]] = graph.relu %[[P]]
// CHECK-NEXT: func.return %[[K2]], %[[K3]], %[[R]], %[[K4]]

func.func @main(%x: tensor<1x4x8x8xf32>, %m: tensor<1x1x1x8xi64>, %v: tensor<8xf32>) -> (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>, tensor<1x4x4x4xf32>, tensor<1x4x8x8xf32>) {
  %one = graph.constant dense<1.0> : tensor<1xf32>
  %big = graph.constant dense<-1.0e+04> : tensor<1xf32>
  %0 = graph.cast %m : (tensor<1x1x1x8xi64>) -> tensor<1x1x1x8xf32> loc("/Cast")
  %1 = graph.sub %one, %0 : (tensor<1xf32>, tensor<1x1x1x8xf32>) -> tensor<1x1x1x8xf32> loc("/Sub")
  %2 = graph.mul %1, %big : (tensor<1x1x1x8xf32>, tensor<1xf32>) -> tensor<1x1x1x8xf32> loc("/Mul")
  %3 = graph.add %x, %2 : (tensor<1x4x8x8xf32>, tensor<1x1x1x8xf32>) -> tensor<1x4x8x8xf32> loc("/silu/Add")
  %4 = graph.sigmoid %3 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/silu/Sigmoid")
  %5 = graph.mul %3, %4 : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/silu/Mul")
  %6 = graph.neg %5 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/silu/Neg")
  %7 = graph.tanh %6 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/b/Tanh")
  %8 = graph.abs %7 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/b/Abs")
  %9 = graph.exp %6 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/c/Exp")
  %10 = graph.log %9 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/c/Log")
  %11 = graph.add %8, %2 : (tensor<1x4x8x8xf32>, tensor<1x1x1x8xf32>) -> tensor<1x4x8x8xf32> loc("/b/Add")
  %vn = graph.neg %v : (tensor<8xf32>) -> tensor<8xf32> loc("/small/Neg")
  %12 = graph.broadcast_to %vn : (tensor<8xf32>) -> tensor<1x4x8x8xf32> loc("/Expand")
  %13 = graph.add %12, %x : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/e/Add")
  %14 = graph.relu %13 : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/e/Relu")
  %15 = graph.sqrt %x : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> loc("/lone/Sqrt")
  %16 = graph.max_pool %15 {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64} : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32> loc("/pool/MaxPool")
  %17 = graph.relu %16 : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> loc("/pool/Relu")
  func.return %11, %10, %17, %14 : tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>, tensor<1x4x4x4xf32>, tensor<1x4x8x8xf32>
}
