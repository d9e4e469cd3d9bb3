// plan-memory: offsets per result in its device's arena (64-byte aligned: 4000
// bytes take 4032), reuse once a buffer is dead, in-place for an elementwise
// kernel whose input dies there (also through a reshape view), graph outputs
// (here through a view) outside the arena (-1), the arena size per device.
// RUN: %dsc opt %s -p plan-memory | %filecheck %s
// RUN: %dsc opt %s -p plan-memory,plan-memory | %filecheck %s

// CHECK:      func.func @main(%x: tensor<1x1000xf32>) -> tensor<1000xf32> attributes {dsc.arena = {cpu = 8064 : i64, "cuda:0" = 8064 : i64}}
// CHECK:      %[[K0:.*]] = kernel.fused(%x) {sym_name = "k0_softmax", {{.*}}offsets = array<i64: 0>}
// CHECK:      %[[V:.*]] = graph.reshape %[[K0]]
// CHECK:      %[[K1:.*]] = kernel.fused(%x) {sym_name = "k1_softmax", {{.*}}offsets = array<i64: 4032>}
// CHECK:      %[[K2:.*]] = kernel.fused(%[[V]], %[[K1]]) {sym_name = "k2_add", {{.*}}offsets = array<i64: 0>}
// CHECK:      %[[T:.*]] = kernel.transfer %[[K2]] {src = "cpu", dst = "cuda:0", offsets = array<i64: 0>}
// CHECK:      %[[K3:.*]] = kernel.fused(%[[T]]) {sym_name = "k3_softmax", {{.*}}offsets = array<i64: 4032>}
// CHECK:      %[[B:.*]] = kernel.transfer %[[K3]] {src = "cuda:0", dst = "cpu", offsets = array<i64: -1>}
// CHECK-NEXT: %[[OUT:.*]] = graph.reshape %[[B]]
// CHECK-NEXT: func.return %[[OUT]]

func.func @main(%x: tensor<1x1000xf32>) -> tensor<1000xf32> {
  %0 = kernel.fused(%x) {sym_name = "k0_softmax", pattern = "softmax", device = "cpu", sources = ["/sm0/Softmax"]} : (tensor<1x1000xf32>) -> tensor<1x1000xf32> {
  ^bb0(%a0: tensor<1x1000xf32>):
    %r = graph.softmax %a0 {axis = 1 : i64} : (tensor<1x1000xf32>) -> tensor<1x1000xf32>
    kernel.yield %r : tensor<1x1000xf32>
  }
  %v = graph.reshape %0 : (tensor<1x1000xf32>) -> tensor<1000xf32>
  %1 = kernel.fused(%x) {sym_name = "k1_softmax", pattern = "softmax", device = "cpu", sources = ["/sm1/Softmax"]} : (tensor<1x1000xf32>) -> tensor<1000xf32> {
  ^bb0(%a0: tensor<1x1000xf32>):
    %r = graph.softmax %a0 {axis = 1 : i64} : (tensor<1x1000xf32>) -> tensor<1x1000xf32>
    %s = graph.reshape %r : (tensor<1x1000xf32>) -> tensor<1000xf32>
    kernel.yield %s : tensor<1000xf32>
  }
  %2 = kernel.fused(%v, %1) {sym_name = "k2_add", pattern = "elementwise", device = "cpu", sources = ["/add/Add"]} : (tensor<1000xf32>, tensor<1000xf32>) -> tensor<1000xf32> {
  ^bb0(%a0: tensor<1000xf32>, %a1: tensor<1000xf32>):
    %r = graph.add %a0, %a1 : (tensor<1000xf32>, tensor<1000xf32>) -> tensor<1000xf32>
    kernel.yield %r : tensor<1000xf32>
  }
  %t = kernel.transfer %2 {src = "cpu", dst = "cuda:0"} : tensor<1000xf32> -> tensor<1000xf32>
  %3 = kernel.fused(%t) {sym_name = "k3_softmax", pattern = "softmax", device = "cuda:0", sources = ["/sm2/Softmax"]} : (tensor<1000xf32>) -> tensor<1000xf32> {
  ^bb0(%a0: tensor<1000xf32>):
    %r = graph.softmax %a0 {axis = 0 : i64} : (tensor<1000xf32>) -> tensor<1000xf32>
    kernel.yield %r : tensor<1000xf32>
  }
  %b = kernel.transfer %3 {src = "cuda:0", dst = "cpu"} : tensor<1000xf32> -> tensor<1000xf32>
  %out = graph.reshape %b : (tensor<1000xf32>) -> tensor<1000xf32>
  func.return %out : tensor<1000xf32>
}
