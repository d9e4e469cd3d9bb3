// RUN: %dsc opt %s -p 'lower-precision{precision=fp16 level=O1}' | %filecheck %s --check-prefix=O1
// RUN: %dsc opt %s -p 'lower-precision{precision=fp16 level=O2}' | %filecheck %s --check-prefix=O2
// RUN: %dsc opt %s -p 'lower-precision{precision=bf16 level=O1}' | %filecheck %s --check-prefix=BF16

builtin.module {
  // At O1 (autocast) the matmul runs in f16 (weight converted at compile time,
  // the input cast once); the relu and the add follow their f16 input (the
  // bias converted at compile time); one cast back; the function keeps its f32
  // signature.
  // O1-LABEL: func.func @mlp
  // O1-SAME:      (%x: tensor<2x4xf32>) -> tensor<2x3xf32>
  // O1-DAG:       %[[W:.*]] = graph.constant dense<{{.*}}> : tensor<4x3xf16>
  // O1-DAG:       %[[X:.*]] = graph.cast %x : (tensor<2x4xf32>) -> tensor<2x4xf16>
  // O1:           %[[M:.*]] = graph.matmul %[[X]], %[[W]] : (tensor<2x4xf16>, tensor<4x3xf16>) -> tensor<2x3xf16>
  // O1-NEXT:      %[[R:.*]] = graph.relu %[[M]] : (tensor<2x3xf16>) -> tensor<2x3xf16>
  // O1-NEXT:      %[[A:.*]] = graph.add %[[R]], %{{.*}} : (tensor<2x3xf16>, tensor<3xf16>) -> tensor<2x3xf16>
  // O1-NEXT:      %[[A32:.*]] = graph.cast %[[A]] : (tensor<2x3xf16>) -> tensor<2x3xf32>
  // O1-NEXT:      func.return %[[A32]] : tensor<2x3xf32>
  //
  // bf16 lowers the same ops; its constants always print as resources.
  // BF16-LABEL: func.func @mlp
  // BF16-SAME:      (%x: tensor<2x4xf32>) -> tensor<2x3xf32>
  // BF16-DAG:       %[[W:.*]] = graph.constant dense_resource<{{.*}}_bf16_{{.*}}> : tensor<4x3xbf16>
  // BF16-DAG:       %[[X:.*]] = graph.cast %x : (tensor<2x4xf32>) -> tensor<2x4xbf16>
  // BF16:           %[[M:.*]] = graph.matmul %[[X]], %[[W]] : (tensor<2x4xbf16>, tensor<4x3xbf16>) -> tensor<2x3xbf16>
  // BF16-NEXT:      %[[R:.*]] = graph.relu %[[M]] : (tensor<2x3xbf16>) -> tensor<2x3xbf16>
  // BF16-NEXT:      %[[A:.*]] = graph.add %[[R]], %{{.*}} : (tensor<2x3xbf16>, tensor<3xbf16>) -> tensor<2x3xbf16>
  // BF16-NEXT:      graph.cast %[[A]] : (tensor<2x3xbf16>) -> tensor<2x3xf32>
  //
  // At O2 the add runs in f16 too; one cast in, one cast out.
  // O2-LABEL: func.func @mlp
  // O2:           graph.cast %x : (tensor<2x4xf32>) -> tensor<2x4xf16>
  // O2-NOT:       graph.cast
  // O2:           %[[A:.*]] = graph.add %{{.*}}, %{{.*}} : (tensor<2x3xf16>, tensor<3xf16>) -> tensor<2x3xf16>
  // O2-NEXT:      %[[A32:.*]] = graph.cast %[[A]] : (tensor<2x3xf16>) -> tensor<2x3xf32>
  // O2-NEXT:      func.return %[[A32]] : tensor<2x3xf32>
  func.func @mlp(%x: tensor<2x4xf32>) -> tensor<2x3xf32> {
    %w = graph.constant dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [10.0, 11.0, 12.0]]> : tensor<4x3xf32>
    %b = graph.constant dense<[0.5, 0.25, 0.125]> : tensor<3xf32>
    %m = graph.matmul %x, %w : (tensor<2x4xf32>, tensor<4x3xf32>) -> tensor<2x3xf32>
    %r = graph.relu %m : (tensor<2x3xf32>) -> tensor<2x3xf32>
    %a = graph.add %r, %b : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    func.return %a : tensor<2x3xf32>
  }

  // At O1 nothing here is a conv or matmul and the first mul reads a float32
  // activation (the graph input): everything stays f32, no casts.
  // O1-LABEL: func.func @softmax
  // O1-NOT:       f16
  // O1:           func.return
  //
  // Softmax and exp stay f32 at O2; the f16 regions around them are cast at the boundaries.
  // O2-LABEL: func.func @softmax
  // O2:           %[[N:.*]] = graph.neg %{{.*}} : (tensor<2x2xf16>) -> tensor<2x2xf16>
  // O2-NEXT:      %[[N32:.*]] = graph.cast %[[N]] : (tensor<2x2xf16>) -> tensor<2x2xf32>
  // O2-NEXT:      %[[S:.*]] = graph.softmax %[[N32]] {axis = 1 : i64} : (tensor<2x2xf32>) -> tensor<2x2xf32>
  // O2-NEXT:      %[[E:.*]] = graph.exp %[[S]] : (tensor<2x2xf32>) -> tensor<2x2xf32>
  // O2-NEXT:      %[[E16:.*]] = graph.cast %[[E]] : (tensor<2x2xf32>) -> tensor<2x2xf16>
  // O2-NEXT:      graph.mul %[[E16]], %{{.*}} : (tensor<2x2xf16>, tensor<2x2xf16>)
  func.func @softmax(%x: tensor<2x2xf32>) -> tensor<2x2xf32> {
    %y = graph.mul %x, %x : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    %n = graph.neg %y : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %s = graph.softmax %n {axis = 1 : i64} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %e = graph.exp %s : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %z = graph.mul %e, %y : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    func.return %z : tensor<2x2xf32>
  }

  // An f16 input cast to f32 for a matmul: the pair f16 -> f32 -> f16 cancels.
  // Constants beyond f16's range saturate to +-65504 instead of becoming inf.
  // O1-LABEL: func.func @cancel_and_saturate
  // O1-NEXT:      %[[W:.*]] = graph.constant dense<{{\[\[}}6.550400e+04], [-6.550400e+04]]> : tensor<2x1xf16>
  // O1-NEXT:      %[[M:.*]] = graph.matmul %h, %[[W]] : (tensor<3x2xf16>, tensor<2x1xf16>) -> tensor<3x1xf16>
  // O1-NEXT:      %[[M32:.*]] = graph.cast %[[M]] : (tensor<3x1xf16>) -> tensor<3x1xf32>
  // O1-NEXT:      func.return %[[M32]] : tensor<3x1xf32>
  func.func @cancel_and_saturate(%h: tensor<3x2xf16>) -> tensor<3x1xf32> {
    %w = graph.constant dense<[[1.0e+05], [-3.4e+38]]> : tensor<2x1xf32>
    %x = graph.cast %h : (tensor<3x2xf16>) -> tensor<3x2xf32>
    %m = graph.matmul %x, %w : (tensor<3x2xf32>, tensor<2x1xf32>) -> tensor<3x1xf32>
    func.return %m : tensor<3x1xf32>
  }
}
