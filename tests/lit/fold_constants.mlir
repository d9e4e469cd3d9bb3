// RUN: %dsc opt %s -p fold-constants | %filecheck %s
// RUN: %dsc opt %s -p 'fold-constants{max-elements=4}' | %filecheck %s --check-prefix=SMALL

builtin.module {
  // A weight transform folds into one constant; the source constant is erased.
  // CHECK-LABEL: func.func @transpose_weight
  // CHECK-NEXT:    %[[W:.*]] = graph.constant dense<{{\[}}[1.000000e+00, 3.000000e+00, 5.000000e+00], [2.000000e+00, 4.000000e+00, 6.000000e+00]]> : tensor<2x3xf32>
  // CHECK-NEXT:    %[[Y:.*]] = graph.matmul %x, %[[W]] : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @transpose_weight(%x: tensor<4x2xf32>) -> tensor<4x3xf32> {
    %w = graph.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]> : tensor<3x2xf32>
    %t = graph.transpose %w {perm = array<i64: 1, 0>} : (tensor<3x2xf32>) -> tensor<2x3xf32>
    %y = graph.matmul %x, %t : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
    func.return %y : tensor<4x3xf32>
  }

  // Shape arithmetic: slice, mul, concat and cast of constants fold to one constant.
  // CHECK-LABEL: func.func @shape_arithmetic
  // CHECK-NEXT:    %[[S:.*]] = graph.constant dense<[2, 12]> : tensor<2xi64>
  // CHECK-NEXT:    func.return %[[S]]
  func.func @shape_arithmetic() -> tensor<2xi64> {
    %shape = graph.constant dense<[2, 3, 4]> : tensor<3xi64>
    %n = graph.slice %shape {starts = array<i64: 0>, ends = array<i64: 1>, steps = array<i64: 1>} : (tensor<3xi64>) -> tensor<1xi64>
    %c = graph.slice %shape {starts = array<i64: 1>, ends = array<i64: 2>, steps = array<i64: 1>} : (tensor<3xi64>) -> tensor<1xi64>
    %h = graph.slice %shape {starts = array<i64: 2>, ends = array<i64: 3>, steps = array<i64: 1>} : (tensor<3xi64>) -> tensor<1xi64>
    %ch = graph.mul %c, %h : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64>
    %new = graph.concat %n, %ch {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64>
    %f = graph.cast %new : (tensor<2xi64>) -> tensor<2xf32>
    %i = graph.cast %f : (tensor<2xf32>) -> tensor<2xi64>
    func.return %i : tensor<2xi64>
  }

  // Ops with a non-constant operand stay.
  // CHECK-LABEL: func.func @not_constant
  // CHECK:         graph.add %x, %{{.*}}
  func.func @not_constant(%x: tensor<2xf32>) -> tensor<2xf32> {
    %c = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %y = graph.add %x, %c : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %y : tensor<2xf32>
  }

  // A graph.if with a constant condition becomes the branch it takes.
  // CHECK-LABEL: func.func @constant_if
  // CHECK-NOT:     graph.if
  // CHECK:         %[[R:.*]] = graph.relu %x
  // CHECK-NEXT:    func.return %[[R]]
  func.func @constant_if(%x: tensor<2xf32>) -> tensor<2xf32> {
    %c = graph.constant dense<true> : tensor<1xi1>
    %r = "graph.if"(%c) ({
      %a = graph.relu %x : (tensor<2xf32>) -> tensor<2xf32>
      graph.yield %a : tensor<2xf32>
    }, {
      %b = graph.neg %x : (tensor<2xf32>) -> tensor<2xf32>
      graph.yield %b : tensor<2xf32>
    }) : (tensor<1xi1>) -> tensor<2xf32>
    func.return %r : tensor<2xf32>
  }

  // max-elements bounds the size of what folding materializes.
  // CHECK-LABEL: func.func @big_broadcast
  // CHECK-NEXT:    graph.constant dense<7.000000e+00> : tensor<2x4xf32>
  // CHECK-NEXT:    func.return
  // SMALL-LABEL: func.func @big_broadcast
  // SMALL:         graph.broadcast_to
  func.func @big_broadcast() -> tensor<2x4xf32> {
    %c = graph.constant dense<7.0> : tensor<1xf32>
    %b = graph.broadcast_to %c : (tensor<1xf32>) -> tensor<2x4xf32>
    func.return %b : tensor<2x4xf32>
  }
}
