// RUN: %dsc opt %s -p canonicalize | %filecheck %s

builtin.module {
  // CHECK-LABEL: func.func @reshape_chain
  // CHECK-NEXT:    %[[R:.*]] = graph.reshape %x : (tensor<2x3x4xf32>) -> tensor<24xf32>
  // CHECK-NEXT:    func.return %[[R]] : tensor<24xf32>
  func.func @reshape_chain(%x: tensor<2x3x4xf32>) -> tensor<24xf32> {
    %0 = graph.reshape %x : (tensor<2x3x4xf32>) -> tensor<6x4xf32>
    %1 = graph.reshape %0 : (tensor<6x4xf32>) -> tensor<1x24xf32>
    %2 = graph.reshape %1 : (tensor<1x24xf32>) -> tensor<24xf32>
    func.return %2 : tensor<24xf32>
  }

  // A reshape chain back to the input's own shape vanishes.
  // CHECK-LABEL: func.func @reshape_round_trip
  // CHECK-NEXT:    func.return %x : tensor<2x3xf32>
  func.func @reshape_round_trip(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %0 = graph.reshape %x : (tensor<2x3xf32>) -> tensor<6xf32>
    %1 = graph.reshape %0 : (tensor<6xf32>) -> tensor<2x3xf32>
    func.return %1 : tensor<2x3xf32>
  }

  // CHECK-LABEL: func.func @identities
  // CHECK-NEXT:    func.return %x, %x, %x : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  func.func @identities(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
    %0 = graph.broadcast_to %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %1 = graph.cast %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %2 = graph.transpose %x {perm = array<i64: 0, 1>} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %0, %1, %2 : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  }

  // transpose(transpose(x, p), q) is transpose(x, p[q]); inverse perms cancel.
  // CHECK-LABEL: func.func @transposes
  // CHECK-NEXT:    %[[T:.*]] = graph.transpose %x {perm = array<i64: 2, 0, 1>} : (tensor<2x3x4xf32>) -> tensor<4x2x3xf32>
  // CHECK-NEXT:    func.return %[[T]], %x : tensor<4x2x3xf32>, tensor<2x3x4xf32>
  func.func @transposes(%x: tensor<2x3x4xf32>) -> (tensor<4x2x3xf32>, tensor<2x3x4xf32>) {
    %0 = graph.transpose %x {perm = array<i64: 1, 0, 2>} : (tensor<2x3x4xf32>) -> tensor<3x2x4xf32>
    %1 = graph.transpose %0 {perm = array<i64: 2, 1, 0>} : (tensor<3x2x4xf32>) -> tensor<4x2x3xf32>
    %2 = graph.transpose %x {perm = array<i64: 1, 2, 0>} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
    %3 = graph.transpose %2 {perm = array<i64: 2, 0, 1>} : (tensor<3x4x2xf32>) -> tensor<2x3x4xf32>
    func.return %1, %3 : tensor<4x2x3xf32>, tensor<2x3x4xf32>
  }

  // Splat neutral constants vanish when they do not change x's type; the
  // unused constants go with them.
  // CHECK-LABEL: func.func @arith_identities
  // CHECK-NOT:     graph.constant
  // CHECK-NEXT:    func.return %x, %x, %x, %x, %x : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  func.func @arith_identities(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
    %zero = graph.constant dense<0.0> : tensor<3xf32>
    %one = graph.constant dense<1.0> : tensor<1xf32>
    %0 = graph.add %zero, %x : (tensor<3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %1 = graph.sub %x, %zero : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %2 = graph.mul %x, %one : (tensor<2x3xf32>, tensor<1xf32>) -> tensor<2x3xf32>
    %3 = graph.div %x, %one : (tensor<2x3xf32>, tensor<1xf32>) -> tensor<2x3xf32>
    %4 = graph.neg %x : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %5 = graph.neg %4 : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %0, %1, %2, %3, %5 : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  }

  // Not identities: 0 - x, 1 / x, a broadcast that grows x, a non-splat constant.
  // CHECK-LABEL: func.func @not_identities
  // CHECK:         graph.sub %{{.*}}, %x
  // CHECK:         graph.div %{{.*}}, %x
  // CHECK:         graph.add %x, %{{.*}} : (tensor<3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
  // CHECK:         graph.mul %{{.*}}, %{{.*}} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  func.func @not_identities(%x: tensor<3xf32>, %y: tensor<2x3xf32>) -> (tensor<3xf32>, tensor<3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
    %zero = graph.constant dense<0.0> : tensor<3xf32>
    %one = graph.constant dense<1.0> : tensor<3xf32>
    %big_zero = graph.constant dense<0.0> : tensor<2x3xf32>
    %mixed = graph.constant dense<[1.0, 2.0, 1.0]> : tensor<3xf32>
    %0 = graph.sub %zero, %x : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    %1 = graph.div %one, %x : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    %2 = graph.add %x, %big_zero : (tensor<3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %3 = graph.mul %y, %mixed : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    func.return %0, %1, %2, %3 : tensor<3xf32>, tensor<3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  }

  // f16 -> f32 -> f16 is exact and cancels; i32 -> i64 -> f32 is i32 -> f32;
  // f32 -> f16 -> f32 rounds, so it stays.
  // CHECK-LABEL: func.func @casts
  // CHECK-NEXT:    %[[C:.*]] = graph.cast %i : (tensor<4xi32>) -> tensor<4xf32>
  // CHECK-NEXT:    %[[D:.*]] = graph.cast %f : (tensor<4xf32>) -> tensor<4xf16>
  // CHECK-NEXT:    %[[E:.*]] = graph.cast %[[D]] : (tensor<4xf16>) -> tensor<4xf32>
  // CHECK-NEXT:    func.return %h, %[[C]], %[[E]] : tensor<4xf16>, tensor<4xf32>, tensor<4xf32>
  func.func @casts(%h: tensor<4xf16>, %i: tensor<4xi32>, %f: tensor<4xf32>) -> (tensor<4xf16>, tensor<4xf32>, tensor<4xf32>) {
    %0 = graph.cast %h : (tensor<4xf16>) -> tensor<4xf32>
    %1 = graph.cast %0 : (tensor<4xf32>) -> tensor<4xf16>
    %2 = graph.cast %i : (tensor<4xi32>) -> tensor<4xi64>
    %3 = graph.cast %2 : (tensor<4xi64>) -> tensor<4xf32>
    %4 = graph.cast %f : (tensor<4xf32>) -> tensor<4xf16>
    %5 = graph.cast %4 : (tensor<4xf16>) -> tensor<4xf32>
    func.return %1, %3, %5 : tensor<4xf16>, tensor<4xf32>, tensor<4xf32>
  }

  // Dead pure ops are erased.
  // CHECK-LABEL: func.func @dead
  // CHECK-NOT:     graph.
  // CHECK:         func.return %x
  func.func @dead(%x: tensor<2xf32>) -> tensor<2xf32> {
    %0 = graph.relu %x : (tensor<2xf32>) -> tensor<2xf32>
    %1 = graph.exp %0 : (tensor<2xf32>) -> tensor<2xf32>
    func.return %x : tensor<2xf32>
  }
}
