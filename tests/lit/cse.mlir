// RUN: %dsc opt %s -p cse | %filecheck %s

builtin.module {
  // Identical ops on identical operands merge; ops with other attributes do not.
  // CHECK-LABEL: func.func @duplicates
  // CHECK-NEXT:    %[[R:.*]] = graph.relu %x
  // CHECK-NEXT:    %[[A:.*]] = graph.add %[[R]], %[[R]]
  // CHECK-NEXT:    %[[T1:.*]] = graph.transpose %x {perm = array<i64: 1, 0>}
  // CHECK-NEXT:    %[[S1:.*]] = graph.softmax %x {axis = 0 : i64}
  // CHECK-NEXT:    %[[S2:.*]] = graph.softmax %x {axis = 1 : i64}
  // CHECK-NEXT:    func.return %[[A]], %[[T1]], %[[T1]], %[[S1]], %[[S2]]
  func.func @duplicates(%x: tensor<2x2xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>) {
    %r1 = graph.relu %x : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %r2 = graph.relu %x : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %a = graph.add %r1, %r2 : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    %t1 = graph.transpose %x {perm = array<i64: 1, 0>} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %t2 = graph.transpose %x {perm = array<i64: 1, 0>} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %s1 = graph.softmax %x {axis = 0 : i64} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %s2 = graph.softmax %x {axis = 1 : i64} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    func.return %a, %t1, %t2, %s1, %s2 : tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>
  }

  // Constants merge when their data is equal and never when it differs.
  // CHECK-LABEL: func.func @inline_constants
  // CHECK-NEXT:    %[[A:.*]] = graph.constant dense<[1.000000e+00, 2.000000e+00]> : tensor<2xf32>
  // CHECK-NEXT:    %[[C:.*]] = graph.constant dense<[1.000000e+00, 3.000000e+00]> : tensor<2xf32>
  // CHECK-NEXT:    %[[D:.*]] = graph.constant dense<[1, 2]> : tensor<2xi32>
  // CHECK-NEXT:    %[[X:.*]] = graph.add %x, %[[A]]
  // CHECK-NEXT:    %[[Z:.*]] = graph.add %x, %[[C]]
  // CHECK-NEXT:    func.return %[[X]], %[[X]], %[[Z]], %[[D]]
  func.func @inline_constants(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xi32>) {
    %a = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %b = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %c = graph.constant dense<[1.0, 3.0]> : tensor<2xf32>
    %d = graph.constant dense<[1, 2]> : tensor<2xi32>
    %x1 = graph.add %x, %a : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %x2 = graph.add %x, %b : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %x3 = graph.add %x, %c : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %x1, %x2, %x3, %d : tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xi32>
  }

  // Resource constants: w1 and w2 hold the same bytes under two keys and
  // merge; w3 differs in its data and stays.
  // CHECK-LABEL: func.func @resource_constants
  // CHECK-NEXT:    %[[W1:.*]] = graph.constant dense_resource<w1> : tensor<20xf32>
  // CHECK-NEXT:    %[[W3:.*]] = graph.constant dense_resource<w3> : tensor<20xf32>
  // CHECK-NEXT:    func.return %[[W1]], %[[W1]], %[[W3]]
  func.func @resource_constants() -> (tensor<20xf32>, tensor<20xf32>, tensor<20xf32>) {
    %w1 = graph.constant dense_resource<w1> : tensor<20xf32>
    %w2 = graph.constant dense_resource<w2> : tensor<20xf32>
    %w3 = graph.constant dense_resource<w3> : tensor<20xf32>
    func.return %w1, %w2, %w3 : tensor<20xf32>, tensor<20xf32>, tensor<20xf32>
  }
}

{-#
  dialect_resources: {
    builtin: {
      w1: "0x04000000000000000000803F0000004000004040000080400000A0400000C0400000E040000000410000104100002041000030410000404100005041000060410000704100008041000088410000904100009841",
      w2: "0x04000000000000000000803F0000004000004040000080400000A0400000C0400000E040000000410000104100002041000030410000404100005041000060410000704100008041000088410000904100009841",
      w3: "0x040000000000803F0000004000004040000080400000A0400000C0400000E0400000004100001041000020410000304100004041000050410000604100007041000080410000884100009041000098410000A041"
    }
  }
#-}
