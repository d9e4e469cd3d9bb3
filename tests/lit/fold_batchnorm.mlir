// RUN: %dsc opt %s -p fold-batchnorm | %filecheck %s

// Every batch norm below has s = scale / sqrt(var + eps) = [0.5, 2] and
// t = bias - mean * s = [0, -1].

builtin.module {
  // conv -> batch_norm: W' = W * s = [1, 6], b' = b * s + t = [0.5, 1].
  // CHECK-LABEL: func.func @conv_bn
  // CHECK-DAG:     %[[W:.*]] = graph.constant dense<{{\[\[\[\[}}1.000000e+00]]], {{\[\[\[}}6.000000e+00]]]]> : tensor<2x1x1x1xf32>
  // CHECK-DAG:     %[[B:.*]] = graph.constant dense<[5.000000e-01, 1.000000e+00]> : tensor<2xf32>
  // CHECK:         %[[Y:.*]] = graph.conv %x, %[[W]], %[[B]] {{.*}} -> tensor<1x2x3x3xf32> loc(fused["conv", "bn"])
  // CHECK-NEXT:    func.return %[[Y]]
  // CHECK-NOT:     graph.batch_norm
  func.func @conv_bn(%x: tensor<1x1x3x3xf32>) -> tensor<1x2x3x3xf32> {
    %w = graph.constant dense<[[[[2.0]]], [[[3.0]]]]> : tensor<2x1x1x1xf32>
    %b = graph.constant dense<[1.0, 1.0]> : tensor<2xf32>
    %scale = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %bias = graph.constant dense<[0.5, -1.0]> : tensor<2xf32>
    %mean = graph.constant dense<[1.0, 0.0]> : tensor<2xf32>
    %var = graph.constant dense<[3.0, 0.0]> : tensor<2xf32>
    %c = graph.conv %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x3x3xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32> loc("conv")
    %y = graph.batch_norm %c, %scale, %bias, %mean, %var {epsilon = 1.0 : f32} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32> loc("bn")
    func.return %y : tensor<1x2x3x3xf32>
  }

  // gemm (trans_b) -> batch_norm: rows of B scaled by s, C' = C * s + t = [0.5, 1].
  // CHECK-LABEL: func.func @gemm_bn
  // CHECK-DAG:     %[[B:.*]] = graph.constant dense<{{\[\[}}5.000000e-01, 1.000000e+00], [6.000000e+00, 8.000000e+00]]> : tensor<2x2xf32>
  // CHECK-DAG:     %[[C:.*]] = graph.constant dense<[5.000000e-01, 1.000000e+00]> : tensor<2xf32>
  // CHECK:         %[[Y:.*]] = graph.gemm %a, %[[B]], %[[C]] {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32, trans_a = 0 : i64, trans_b = 1 : i64}
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @gemm_bn(%a: tensor<3x2xf32>) -> tensor<3x2xf32> {
    %b = graph.constant dense<[[1.0, 2.0], [3.0, 4.0]]> : tensor<2x2xf32>
    %c = graph.constant dense<[1.0, 1.0]> : tensor<2xf32>
    %scale = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %bias = graph.constant dense<[0.5, -1.0]> : tensor<2xf32>
    %mean = graph.constant dense<[1.0, 0.0]> : tensor<2xf32>
    %var = graph.constant dense<[3.0, 0.0]> : tensor<2xf32>
    %g = graph.gemm %a, %b, %c {alpha = 1.0 : f32, beta = 1.0 : f32, trans_a = 0 : i64, trans_b = 1 : i64} : (tensor<3x2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<3x2xf32>
    %y = graph.batch_norm %g, %scale, %bias, %mean, %var {epsilon = 1.0 : f32} : (tensor<3x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<3x2xf32>
    func.return %y : tensor<3x2xf32>
  }

  // A batch norm that cannot fold into its producer (the conv has a second
  // use) becomes x * s + t with [C, 1, 1] constants.
  // CHECK-LABEL: func.func @standalone
  // CHECK:         %[[C:.*]] = graph.conv
  // CHECK-DAG:     %[[S:.*]] = graph.constant dense<{{\[\[\[}}5.000000e-01]], {{\[\[}}2.000000e+00]]]> : tensor<2x1x1xf32>
  // CHECK-DAG:     %[[T:.*]] = graph.constant dense<{{\[\[\[}}0.000000e+00]], {{\[\[}}-1.000000e+00]]]> : tensor<2x1x1xf32>
  // CHECK:         %[[M:.*]] = graph.mul %[[C]], %[[S]] : (tensor<1x2x3x3xf32>, tensor<2x1x1xf32>) -> tensor<1x2x3x3xf32> loc("bn")
  // CHECK-NEXT:    %[[A:.*]] = graph.add %[[M]], %[[T]] : (tensor<1x2x3x3xf32>, tensor<2x1x1xf32>) -> tensor<1x2x3x3xf32> loc("bn")
  // CHECK-NEXT:    func.return %[[A]], %[[C]]
  func.func @standalone(%x: tensor<1x1x3x3xf32>) -> (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) {
    %w = graph.constant dense<[[[[2.0]]], [[[3.0]]]]> : tensor<2x1x1x1xf32>
    %scale = graph.constant dense<[1.0, 2.0]> : tensor<2xf32>
    %bias = graph.constant dense<[0.5, -1.0]> : tensor<2xf32>
    %mean = graph.constant dense<[1.0, 0.0]> : tensor<2xf32>
    %var = graph.constant dense<[3.0, 0.0]> : tensor<2xf32>
    %c = graph.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x3x3xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x3x3xf32>
    %y = graph.batch_norm %c, %scale, %bias, %mean, %var {epsilon = 1.0 : f32} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32> loc("bn")
    func.return %y, %c : tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>
  }

  // Parameters known only at run time: the batch norm is left for later passes.
  // CHECK-LABEL: func.func @runtime_params
  // CHECK:         graph.batch_norm %x, %scale
  func.func @runtime_params(%x: tensor<1x2xf32>, %scale: tensor<2xf32>) -> tensor<1x2xf32> {
    %bias = graph.constant dense<[0.5, -1.0]> : tensor<2xf32>
    %mean = graph.constant dense<[1.0, 0.0]> : tensor<2xf32>
    %var = graph.constant dense<[3.0, 0.0]> : tensor<2xf32>
    %y = graph.batch_norm %x, %scale, %bias, %mean, %var {epsilon = 1.0 : f32} : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
    func.return %y : tensor<1x2xf32>
  }
}
