// fuse-matmul-epilogue: an operand transpose moves into the kernel; bias add and activation
// (relu, the erf GELU chain in both orders) follow the matmul; a transpose with another use,
// a full-shape (residual) add, and the consumers of a matmul used twice stay outside.
// RUN: %dsc opt %s -p fuse-matmul-epilogue | %filecheck %s

// CHECK:      %[[T:.*]] = graph.transpose %a {{.*}} loc("/shared/Transpose")
// CHECK-NEXT: %[[K0:.*]] = kernel.fused(%y, %w, %b) {sym_name = "k0_matmul_epilogue", pattern = "matmul_epilogue", device = "cpu", sources = ["/t0/Transpose", "/m0/MatMul", "/m0/Add", "/m0/Relu"]}
// CHECK-NEXT: ^{{.*}}(
// CHECK-NEXT:   graph.transpose
// CHECK-NEXT:   graph.matmul
// CHECK-NEXT:   graph.add
// CHECK-NEXT:   graph.relu
// CHECK-NEXT:   kernel.yield
// CHECK:      %[[K1:.*]] = kernel.fused(%[[K0]], %w, %b, %c2, %c1, %ch) {sym_name = "k1_matmul_epilogue", {{.*}}sources = ["/m1/MatMul", "/m1/Add", "/gelu/Div", "/gelu/Erf", "/gelu/Add", "/gelu/Mul", "/gelu/Mul_1"]}
// CHECK:      %[[K2:.*]] = kernel.fused(%[[K1]], %w, %ch, %c2, %c1) {sym_name = "k2_matmul_epilogue", {{.*}}sources = ["/m2/MatMul", "/gelu2/Mul", "/gelu2/Div", "/gelu2/Erf", "/gelu2/Add", "/gelu2/Mul_1"]}
// CHECK:      %[[K3:.*]] = kernel.fused(%[[K2]], %[[T]]) {sym_name = "k3_matmul_epilogue", {{.*}}sources = ["/m3/MatMul"]}
// CHECK:      graph.add %[[K3]], %x {{.*}}loc("/res/Add")
// CHECK:      graph.relu %[[K3]]
// CHECK:      func.return

func.func @main(%x: tensor<8x16xf32>, %y: tensor<16x8xf32>, %a: tensor<16x16xf32>, %w: tensor<16x16xf32>, %b: tensor<16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x16xf32>) {
  %c2 = graph.constant dense<1.4142135> : tensor<1xf32>
  %c1 = graph.constant dense<1.0> : tensor<1xf32>
  %ch = graph.constant dense<0.5> : tensor<1xf32>
  %t = graph.transpose %a {perm = array<i64: 1, 0>} : (tensor<16x16xf32>) -> tensor<16x16xf32> loc("/shared/Transpose")
  %xt = graph.transpose %y {perm = array<i64: 1, 0>} : (tensor<16x8xf32>) -> tensor<8x16xf32> loc("/t0/Transpose")
  %1 = graph.matmul %xt, %w : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32> loc("/m0/MatMul")
  %2 = graph.add %1, %b : (tensor<8x16xf32>, tensor<16xf32>) -> tensor<8x16xf32> loc("/m0/Add")
  %3 = graph.relu %2 : (tensor<8x16xf32>) -> tensor<8x16xf32> loc("/m0/Relu")
  %4 = graph.matmul %3, %w : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32> loc("/m1/MatMul")
  %5 = graph.add %b, %4 : (tensor<16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32> loc("/m1/Add")
  %6 = graph.div %5, %c2 : (tensor<8x16xf32>, tensor<1xf32>) -> tensor<8x16xf32> loc("/gelu/Div")
  %7 = graph.erf %6 : (tensor<8x16xf32>) -> tensor<8x16xf32> loc("/gelu/Erf")
  %8 = graph.add %7, %c1 : (tensor<8x16xf32>, tensor<1xf32>) -> tensor<8x16xf32> loc("/gelu/Add")
  %9 = graph.mul %5, %8 : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32> loc("/gelu/Mul")
  %10 = graph.mul %9, %ch : (tensor<8x16xf32>, tensor<1xf32>) -> tensor<8x16xf32> loc("/gelu/Mul_1")
  %11 = graph.matmul %10, %w : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32> loc("/m2/MatMul")
  %12 = graph.mul %11, %ch : (tensor<8x16xf32>, tensor<1xf32>) -> tensor<8x16xf32> loc("/gelu2/Mul")
  %13 = graph.div %11, %c2 : (tensor<8x16xf32>, tensor<1xf32>) -> tensor<8x16xf32> loc("/gelu2/Div")
  %14 = graph.erf %13 : (tensor<8x16xf32>) -> tensor<8x16xf32> loc("/gelu2/Erf")
  %15 = graph.add %c1, %14 : (tensor<1xf32>, tensor<8x16xf32>) -> tensor<8x16xf32> loc("/gelu2/Add")
  %16 = graph.mul %12, %15 : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32> loc("/gelu2/Mul_1")
  %17 = graph.matmul %16, %t : (tensor<8x16xf32>, tensor<16x16xf32>) -> tensor<8x16xf32> loc("/m3/MatMul")
  %18 = graph.add %17, %x : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32> loc("/res/Add")
  %19 = graph.relu %17 : (tensor<8x16xf32>) -> tensor<8x16xf32> loc("/m3/Relu")
  func.return %18, %19, %t : tensor<8x16xf32>, tensor<8x16xf32>, tensor<16x16xf32>
}
