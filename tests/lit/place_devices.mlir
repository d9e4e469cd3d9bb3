// place-devices: big matmuls go to the GPU with their neighbours, tiny kernels
// between CPU kernels stay on the CPU, one transfer per value and destination,
// constants never move, views cross as their base, graph outputs end on the CPU
// (copied right after their producer).
// RUN: %dsc opt %s -p 'place-devices{gpu="sm_80"}' | %filecheck %s
// RUN: %dsc opt %s -p 'place-devices{gpu="sm_80" overrides="/mm2/MatMul=cpu"}' | %filecheck %s --check-prefix=NODE
// RUN: %dsc opt %s -p 'place-devices{gpu="sm_80" overrides="matmul=cpu"}' | %filecheck %s --check-prefix=OP
// RUN: %dsc opt %s -p 'place-devices{gpu="sm_80"},place-devices{gpu="sm_80"}' | %filecheck %s

// CHECK:      %[[B:.*]] = graph.constant
// CHECK-NEXT: %[[X:.*]] = kernel.transfer %x {src = "cpu", dst = "cuda:0"}
// CHECK-NEXT: %[[W:.*]] = kernel.transfer %w {src = "cpu", dst = "cuda:0"}
// CHECK-NEXT: %[[K0:.*]] = kernel.fused(%[[X]], %[[W]]) {sym_name = "k0_matmul", {{.*}}device = "cuda:0"
// CHECK:      %[[K1:.*]] = kernel.fused(%[[K0]], %[[B]]) {sym_name = "k1_add", {{.*}}device = "cuda:0"
// CHECK:      %[[K2:.*]] = kernel.fused(%[[K1]], %[[W]]) {sym_name = "k2_matmul", {{.*}}device = "cuda:0"
// CHECK:      %[[OUT:.*]] = kernel.transfer %[[K2]] {src = "cuda:0", dst = "cpu"}
// CHECK-NEXT: %[[V:.*]] = graph.reshape %[[OUT]] : (tensor<256x256xf32>) -> tensor<65536xf32>
// CHECK-NEXT: kernel.fused(%s) {sym_name = "k3_lrn", {{.*}}device = "cpu"
// CHECK:      kernel.fused(%{{.*}}) {sym_name = "k4_relu", {{.*}}device = "cpu"
// CHECK:      %[[K5:.*]] = kernel.fused(%{{.*}}) {sym_name = "k5_lrn", {{.*}}device = "cpu"
// CHECK:      func.return %[[OUT]], %[[V]], %[[K5]]
// CHECK-NOT:  kernel.transfer

// NODE:      %[[X:.*]] = kernel.transfer %x {src = "cpu", dst = "cuda:0"}
// NODE-NEXT: %[[W:.*]] = kernel.transfer %w {src = "cpu", dst = "cuda:0"}
// NODE-NEXT: %[[K0:.*]] = kernel.fused(%[[X]], %[[W]]) {sym_name = "k0_matmul", {{.*}}device = "cuda:0"
// NODE:      %[[K1:.*]] = kernel.fused(%[[K0]], %{{.*}}) {sym_name = "k1_add", {{.*}}device = "cuda:0"
// NODE:      %[[T:.*]] = kernel.transfer %[[K1]] {src = "cuda:0", dst = "cpu"}
// NODE-NEXT: %[[K2:.*]] = kernel.fused(%[[T]], %w) {sym_name = "k2_matmul", {{.*}}device = "cpu"
// NODE:      %[[V:.*]] = graph.reshape %[[K2]]
// NODE-NOT:  kernel.transfer
// NODE:      func.return %[[K2]], %[[V]],

// OP-NOT: kernel.transfer
// OP-NOT: "cuda:0"
// OP:     func.return

func.func @main(%x: tensor<256x256xf32>, %w: tensor<256x256xf32>, %s: tensor<1x8x4x4xf32>) -> (tensor<256x256xf32>, tensor<65536xf32>, tensor<1x8x4x4xf32>) {
  %b = graph.constant dense<5.000000e-01> : tensor<1xf32>
  %0 = kernel.fused(%x, %w) {sym_name = "k0_matmul", pattern = "matmul", device = "", sources = ["/mm1/MatMul"]} : (tensor<256x256xf32>, tensor<256x256xf32>) -> tensor<256x256xf32> {
  ^bb0(%a0: tensor<256x256xf32>, %a1: tensor<256x256xf32>):
    %r = graph.matmul %a0, %a1 : (tensor<256x256xf32>, tensor<256x256xf32>) -> tensor<256x256xf32>
    kernel.yield %r : tensor<256x256xf32>
  }
  %1 = kernel.fused(%0, %b) {sym_name = "k1_add", pattern = "elementwise", device = "", sources = ["/add/Add"]} : (tensor<256x256xf32>, tensor<1xf32>) -> tensor<256x256xf32> {
  ^bb0(%a0: tensor<256x256xf32>, %a1: tensor<1xf32>):
    %r = graph.add %a0, %a1 : (tensor<256x256xf32>, tensor<1xf32>) -> tensor<256x256xf32>
    kernel.yield %r : tensor<256x256xf32>
  }
  %2 = kernel.fused(%1, %w) {sym_name = "k2_matmul", pattern = "matmul", device = "", sources = ["/mm2/MatMul"]} : (tensor<256x256xf32>, tensor<256x256xf32>) -> tensor<256x256xf32> {
  ^bb0(%a0: tensor<256x256xf32>, %a1: tensor<256x256xf32>):
    %r = graph.matmul %a0, %a1 : (tensor<256x256xf32>, tensor<256x256xf32>) -> tensor<256x256xf32>
    kernel.yield %r : tensor<256x256xf32>
  }
  %v = graph.reshape %2 : (tensor<256x256xf32>) -> tensor<65536xf32>
  %3 = kernel.fused(%s) {sym_name = "k3_lrn", pattern = "lrn", device = "", sources = ["/lrn1/LRN"]} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  ^bb0(%a0: tensor<1x8x4x4xf32>):
    %r = graph.lrn %a0 {size = 3 : i64, alpha = 1.000000e-04 : f32, beta = 7.500000e-01 : f32, bias = 1.000000e+00 : f32} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
    kernel.yield %r : tensor<1x8x4x4xf32>
  }
  %4 = kernel.fused(%3) {sym_name = "k4_relu", pattern = "elementwise", device = "", sources = ["/relu/Relu"]} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  ^bb0(%a0: tensor<1x8x4x4xf32>):
    %r = graph.relu %a0 : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
    kernel.yield %r : tensor<1x8x4x4xf32>
  }
  %5 = kernel.fused(%4) {sym_name = "k5_lrn", pattern = "lrn", device = "", sources = ["/lrn2/LRN"]} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {
  ^bb0(%a0: tensor<1x8x4x4xf32>):
    %r = graph.lrn %a0 {size = 3 : i64, alpha = 1.000000e-04 : f32, beta = 7.500000e-01 : f32, bias = 1.000000e+00 : f32} : (tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32>
    kernel.yield %r : tensor<1x8x4x4xf32>
  }
  func.return %2, %v, %5 : tensor<256x256xf32>, tensor<65536xf32>, tensor<1x8x4x4xf32>
}
