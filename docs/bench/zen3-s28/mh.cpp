// Multi-variant harness for the q4_1 kernel (docs/bench/zen3-s28/kernel-variants.md): the current kernel and edited copies, each in its own namespace, timed interleaved in one process.
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/op/op.hpp>
#include <openvino/op/parameter.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#define OPENVINO_CREATE_EXTENSIONS(x)
#define vinolm v0
#include "../../../src/vinolm/kernels/q4_1.cpp"  // the current kernel, as v0
#undef vinolm
#ifdef V1
#define vinolm v1
#include V1
#undef vinolm
#endif
#ifdef V2
#define vinolm v2
#include V2
#undef vinolm
#endif
#ifdef V3
#define vinolm v3
#include V3
#undef vinolm
#endif
static double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
// A matmul through the op's public evaluate, as OpenVINO calls it.
template <class Op>
static double run(const ov::Tensor& x, const ov::Tensor& w, ov::Tensor& y) {
    auto p = std::make_shared<ov::op::v0::Parameter>(ov::element::f32, ov::PartialShape{-1, (int64_t)x.get_shape()[1]});
    auto c = std::make_shared<ov::op::v0::Parameter>(ov::element::u8, w.get_shape());
    Op op(ov::OutputVector{p, c});
    ov::TensorVector outs{y};
    double s = now();
    op.evaluate(outs, ov::TensorVector{x, w});
    return now() - s;
}
int main(int argc, char** argv){
  size_t K = atol(argv[1]), M = atol(argv[2]), N = atol(argv[3]);
  size_t blocks = K/32, groups = N/8;
  std::mt19937 g(1);
  ov::Tensor w(ov::element::u8, {groups, blocks*160});
  uint8_t* wp = w.data<uint8_t>();
  for (size_t i = 0; i < w.get_size(); ++i) wp[i] = g();
  std::normal_distribution<float> nd(0, 1);
  for (size_t i = 0; i < groups*blocks; ++i) { uint16_t* h = (uint16_t*)(wp + i*160); for (int j=0;j<16;j++) h[j]= _cvtss_sh(0.01f + 0.001f*(g()%50) * (j<8?1:-1), 0); }
  ov::Tensor x(ov::element::f32, {M, K}); for (size_t i = 0; i < M*K; ++i) x.data<float>()[i] = nd(g);
  std::vector<std::string> names{"base"};
  std::vector<ov::Tensor> ys(4);
  for (auto& y : ys) y = ov::Tensor(ov::element::f32, {M, N});
  std::vector<std::vector<double>> t(4);
  for (int rep = 0; rep < 15; ++rep) {
    t[0].push_back(run<v0::Q4MatMul>(x, w, ys[0]));
#ifdef V1
    t[1].push_back(run<v1::Q4MatMul>(x, w, ys[1]));
#endif
#ifdef V2
    t[2].push_back(run<v2::Q4MatMul>(x, w, ys[2]));
#endif
#ifdef V3
    t[3].push_back(run<v3::Q4MatMul>(x, w, ys[3]));
#endif
  }
  double macs = double(M)*N*K;
  for (int v = 0; v < 4; ++v) {
    if (t[v].empty()) continue;
    bool same = std::memcmp(ys[v].data(), ys[0].data(), M*N*4) == 0;
    auto s = t[v]; std::sort(s.begin(), s.end());
    printf("K=%zu M=%zu N=%zu v%d: median %.2f ms (%.1f GMAC/s, %.2fx base) min %.2f %s\n", K, M, N, v, s[7]*1e3, macs/s[7]/1e9,
           [&]{auto b=t[0]; std::sort(b.begin(), b.end()); return b[7]/s[7];}(), s[0]*1e3, same ? "bit-identical" : "DIFFERENT");
  }
}
