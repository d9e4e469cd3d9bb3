// RUN: %dsc opt %s -p dce | %filecheck %s

builtin.module {
  // A dead chain of pure ops and its constants go; what reaches the return stays.
  // CHECK-LABEL: func.func @dead_chain
  // CHECK-NEXT:    %[[R:.*]] = graph.relu %x
  // CHECK-NEXT:    func.return %[[R]]
  func.func @dead_chain(%x: tensor<2xf32>, %unused: tensor<3xf32>) -> tensor<2xf32> {
    %c = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %a = graph.add %x, %c : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %e = graph.exp %a : (tensor<2xf32>) -> tensor<2xf32>
    %r = graph.relu %x : (tensor<2xf32>) -> tensor<2xf32>
    %n = graph.neg %unused : (tensor<3xf32>) -> tensor<3xf32>
    func.return %r : tensor<2xf32>
  }

  // An unused graph.if with pure branches is dead; a used one stays with its branches.
  // CHECK-LABEL: func.func @ifs
  // CHECK-NEXT:    %[[R:.*]] = "graph.if"(%c) ({
  // CHECK-NEXT:      %[[A:.*]] = graph.relu %x
  // CHECK-NEXT:      graph.yield %[[A]]
  // CHECK-NEXT:    }, {
  // CHECK-NEXT:      graph.yield %x
  // CHECK-NEXT:    })
  // CHECK-NEXT:    func.return %[[R]]
  func.func @ifs(%c: tensor<1xi1>, %x: tensor<2xf32>) -> tensor<2xf32> {
    %dead = "graph.if"(%c) ({
      %a = graph.exp %x : (tensor<2xf32>) -> tensor<2xf32>
      graph.yield %a : tensor<2xf32>
    }, {
      graph.yield %x : tensor<2xf32>
    }) : (tensor<1xi1>) -> tensor<2xf32>
    %live = "graph.if"(%c) ({
      %a = graph.relu %x : (tensor<2xf32>) -> tensor<2xf32>
      %b = graph.neg %x : (tensor<2xf32>) -> tensor<2xf32>
      graph.yield %a : tensor<2xf32>
    }, {
      graph.yield %x : tensor<2xf32>
    }) : (tensor<1xi1>) -> tensor<2xf32>
    func.return %live : tensor<2xf32>
  }
}
