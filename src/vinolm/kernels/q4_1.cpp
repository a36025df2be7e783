// vinolm's block-quantized weight matmuls for x86 CPUs with AVX2: llama.cpp's Q4_1 and Q8_0 arithmetic as
// OpenVINO operations.
//
// Why they exist: without VNNI (AVX2-only CPUs such as AMD Zen 2/3), OpenVINO's CPU plugin multiplies compressed
// weights in f32 (`brgemm_avx2_f32`), unpacking every weight to a float each token; llama.cpp multiplies 8-bit
// integers (`vpmaddubsw`) and decodes faster. These ops do what llama.cpp does, inside the graph OpenVINO runs, so
// both of vinolm's OpenVINO engines and the server keep their pipeline (docs/benchmarks.md sections 31-32).
//
// Weights (input 1, u8 [N/8, K/32 * group bytes]) come in blocks of 32 along K, repacked by 8 output rows.
// Activations (input 0, f32 [..., K]) are quantized to int8 per block of 32 on the fly (llama.cpp's Q8_1: scale
// dx, values xq).
// - Q4MatMul, llama.cpp's Q4_1 (w = d*q + m, q in 0..15, f16 d and m): for rows 8g..8g+7 and block b, 160 bytes =
//   8 scales, 8 minimums (row order), then four 32-byte vectors: vector v's byte 4r+j holds row r's element 4v+j
//   in its low nibble and element 16+4v+j in its high one. A block contributes d*dx*sum(q*xq) + m*dx*sum(xq).
// - Q8MatMul, llama.cpp's Q8_0 (w = d*q, q in -127..127, f16 d), for the output layer, which llama.cpp's files
//   keep at 8 bits: 272 bytes = 8 scales (in the row order 0, 2, 4, 6, 1, 3, 5, 7), then per pair of rows
//   (2p, 2p+1) their elements 0-15, then 16-31. A block contributes d*dx*sum(q*xq).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/model.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/op.hpp>
#include <openvino/op/util/binary_elementwise_arithmetic.hpp>
#include <openvino/op/util/unary_elementwise_arithmetic.hpp>

namespace vinolm {

constexpr size_t kBlock = 32;  // weights (and activations) per block along K
constexpr size_t kRows = 8;    // output rows repacked together
// How far ahead of the block being multiplied its row group's weights are fetched into cache: the hardware
// prefetcher alone left a token step's matmuls at ~45% of one core's read bandwidth (1024 B: 1.2x at M=1, sweep of
// 512-4096 on Zen 3 in docs/benchmarks.md section 32).
constexpr size_t kPrefetch = 1024;

// Activations of one call, quantized per block: int8 values, scales, and scale * sum of the block's values.
struct QuantizedRows {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<float> s;
};

// Scale max|x|/127, values x/scale rounded to nearest even (the default rounding of vcvtps2dq).
static void quantize_block(const float* x, int8_t* q, float* d, float* s) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(_mm256_set1_ps(-0.f), v[i]));
    }
    __m128 top = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    top = _mm_max_ps(top, _mm_movehl_ps(top, top));
    top = _mm_max_ss(top, _mm_movehdup_ps(top));
    const float scale = _mm_cvtss_f32(top) / 127.f;
    const __m256 inverse = _mm256_set1_ps(scale != 0.f ? 1.f / scale : 0.f);
    __m256i values[4];
    for (int i = 0; i < 4; ++i) values[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inverse));
    // |values| <= 127: packing saturates nothing; the packs interleave 32-bit groups, put back in order
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(values[0], values[1]),
                                             _mm256_packs_epi32(values[2], values[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(values[0], values[1]),
                                           _mm256_add_epi32(values[2], values[3]));
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    sum = _mm_hadd_epi32(sum, sum);
    sum = _mm_hadd_epi32(sum, sum);
    *d = scale;
    *s = scale * static_cast<float>(_mm_cvtsi128_si32(sum));
}

// Each format multiplies one block of a group of 8 output rows against R activation rows' blocks, unpacking the
// weights once for all R, and returns per activation row the eight int32 sums sum(q*xq) in a vector whose lanes
// are the output rows in the order the block's scales are stored.
struct Q4_1Blocks {
    static constexpr size_t kGroupBytes = 160;
    static constexpr size_t kHead = 32;  // 8 f16 scales, then 8 f16 minimums
    static constexpr bool kMinimums = true;
    static constexpr bool kRowOrder = true;  // lanes are rows 0-7
    // Activation rows a prompt's pass multiplies against one unpacking of the weights: 4 took 0.72-0.81x the time
    // of the previous layout's 4 at M = 256 on Zen 3, 6 and 8 spilled registers (docs/benchmarks.md section 34).
    static constexpr int kRowsPerPass = 4;

    // One vpmaddubsw of a vector's nibbles against four activation bytes broadcast to every 32-bit lane sums two
    // products per int16 for all eight rows at once; the sums stay in their row's lane, so a block needs no
    // horizontal adds.
    template <int R>
    static void dots(const uint8_t* data, const int8_t* const* x, __m256i* out) {
        const __m256i low = _mm256_set1_epi8(0x0F);
        __m256i sums[R];
        for (int r = 0; r < R; ++r) sums[r] = _mm256_setzero_si256();
        for (int v = 0; v < 4; ++v) {
            const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + v * 32));
            const __m256i lo = _mm256_and_si256(raw, low);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            for (int r = 0; r < R; ++r) {
                int32_t first, second;
                std::memcpy(&first, x[r] + 4 * v, 4);
                std::memcpy(&second, x[r] + 16 + 4 * v, 4);
                // q <= 15 and |xq| <= 127: an int16 holds two products, and the eight summed here <= 30480
                sums[r] = _mm256_add_epi16(sums[r], _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(first)),
                                                                     _mm256_maddubs_epi16(hi, _mm256_set1_epi32(second))));
                // Keeps each row's sum in a register as it goes: left free, GCC 12 computed all 32 products
                // first and spilled them to the stack (1.4x slower at M = 256).
                asm("" : "+x"(sums[r]));
            }
        }
        for (int r = 0; r < R; ++r) out[r] = _mm256_madd_epi16(sums[r], _mm256_set1_epi16(1));
    }
};

struct Q8_0Blocks {
    static constexpr size_t kGroupBytes = 272;
    static constexpr size_t kHead = 16;  // 8 f16 scales
    static constexpr bool kMinimums = false;
    static constexpr bool kRowOrder = false;  // lanes are rows 0, 2, 4, 6, 1, 3, 5, 7
    // Its wider unpacked weights leave registers for 2.
    static constexpr int kRowsPerPass = 2;

    // Pair p's rows come from the two 128-bit lanes of one load, against the activation block broadcast to both;
    // three horizontal adds bring the four pairs together.
    template <int R>
    static void dots(const uint8_t* data, const int8_t* const* x, __m256i* out) {
        __m256i lo[4], hi[4];  // per pair of rows: elements 0-15 and 16-31, int8
        for (int pair = 0; pair < 4; ++pair) {
            lo[pair] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + pair * 64));
            hi[pair] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + pair * 64 + 32));
        }
        const __m256i ones = _mm256_set1_epi16(1);
        for (int r = 0; r < R; ++r) {
            const __m128i* q = reinterpret_cast<const __m128i*>(x[r]);
            const __m256i xlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(q));
            const __m256i xhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(q + 1));
            const __m256i abs_lo = _mm256_abs_epi8(xlo), abs_hi = _mm256_abs_epi8(xhi);
            __m256i sums[4];
            for (int pair = 0; pair < 4; ++pair) {
                // vpmaddubsw multiplies unsigned by signed: |xq| by q carrying xq's sign (llama.cpp's trick). Two
                // products reach 2*127*127, so each half is widened to int32 before anything is added to it.
                const __m256i a = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_lo, _mm256_sign_epi8(lo[pair], xlo)), ones);
                const __m256i b = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_hi, _mm256_sign_epi8(hi[pair], xhi)), ones);
                sums[pair] = _mm256_add_epi32(a, b);
            }
            out[r] = _mm256_hadd_epi32(_mm256_hadd_epi32(sums[0], sums[1]), _mm256_hadd_epi32(sums[2], sums[3]));
        }
    }
};

// One call's activations, quantized: row r's values at q + r*k, its blocks' scales and sums at d/s + r*blocks.
struct ActivationRows {
    const int8_t* q;
    const float* d;
    const float* s;
    size_t k, blocks;
};

// Eight output rows (g) for R activation rows from `first`: each block's weights are unpacked once for all R.
// `prefetch` on the first pass over the group's weights only: a prompt's later passes find them in cache, and
// without prefetching there a 256-row pass took 0.91-0.94x the time (docs/benchmarks.md section 34).
template <class F, int R>
static void dot_group(const uint8_t* w, const ActivationRows& x, size_t first, float* out, size_t n, bool prefetch) {
    __m256 acc[R], offset[R];
    for (int r = 0; r < R; ++r) acc[r] = offset[r] = _mm256_setzero_ps();
    for (size_t b = 0; b < x.blocks; ++b, w += F::kGroupBytes) {
        if (prefetch)
            for (size_t line = 0; line < F::kGroupBytes; line += 64)
                _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch + line), _MM_HINT_T0);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        __m256 m = _mm256_setzero_ps();
        if constexpr (F::kMinimums) m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
        const int8_t* xq[R];
        for (int r = 0; r < R; ++r) xq[r] = x.q + (first + r) * x.k + b * kBlock;
        __m256i dots[R];
        F::template dots<R>(w + F::kHead, xq, dots);
        for (int r = 0; r < R; ++r) {
            const size_t i = (first + r) * x.blocks + b;
            if constexpr (F::kMinimums) offset[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(x.s[i]), offset[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x.d[i])), _mm256_cvtepi32_ps(dots[r]), acc[r]);
        }
    }
    const __m256i rows = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int r = 0; r < R; ++r) {
        const __m256 sum = _mm256_add_ps(acc[r], offset[r]);
        _mm256_storeu_ps(out + (first + r) * n, F::kRowOrder ? sum : _mm256_permutevar8x32_ps(sum, rows));
    }
}

// Quantizes `rows` rows of k activations (row r at x + r*stride) per block of 32, in parallel for a prompt.
static ActivationRows quantize_rows(const float* x, size_t rows, size_t k, size_t stride, QuantizedRows& act) {
    const size_t blocks = k / kBlock;
    act.q.resize(rows * k);
    act.d.resize(rows * blocks);
    act.s.resize(rows * blocks);
    auto quantize_row = [&](size_t r) {
        for (size_t b = 0; b < blocks; ++b) {
            const size_t i = r * blocks + b;
            quantize_block(x + r * stride + b * kBlock, act.q.data() + i * kBlock, &act.d[i], &act.s[i]);
        }
    };
    if (rows == 1)  // a token step: not worth waking the other threads
        quantize_row(0);
    else
        ov::parallel_for(rows, quantize_row);
    return ActivationRows{act.q.data(), act.d.data(), act.s.data(), k, blocks};
}

// Four row groups (32 outputs) of a weight matrix are one task of a parallel section: every activation row is
// multiplied while they are in cache, F::kRowsPerPass activation rows at a time (the weights unpacked once for
// them), then 2, then 1.
constexpr size_t kGroupsPerTask = 4;

static size_t tasks_for(size_t groups) { return (groups + kGroupsPerTask - 1) / kGroupsPerTask; }

template <class F>
static void multiply_task(const uint8_t* wb, size_t groups, const ActivationRows& x, size_t rows, float* out,
                          size_t n, size_t task) {
    const size_t first = task * kGroupsPerTask, last = std::min(groups, first + kGroupsPerTask);
    constexpr size_t kWide = F::kRowsPerPass;
    for (size_t r = 0; r < rows;) {
        const size_t pass = rows - r >= kWide ? kWide : rows - r >= 2 ? 2 : 1;
        for (size_t g = first; g < last; ++g) {
            const uint8_t* wg = wb + g * x.blocks * F::kGroupBytes;
            float* og = out + g * kRows;
            if (pass == kWide)
                dot_group<F, F::kRowsPerPass>(wg, x, r, og, n, r == 0);
            else if (pass == 2)
                dot_group<F, 2>(wg, x, r, og, n, r == 0);
            else
                dot_group<F, 1>(wg, x, r, og, n, r == 0);
        }
        r += pass;
    }
}

// The shape checks every operation makes: f32 activations, static 2-D u8 blobs of whole blocks.
static void check_blob(const ov::Node* node, size_t port, size_t group_bytes) {
    const auto weights = node->get_input_partial_shape(port);
    NODE_VALIDATION_CHECK(node, node->get_input_element_type(port) == ov::element::u8, "weights must be u8 blocks");
    NODE_VALIDATION_CHECK(node, weights.rank().is_static() && weights.rank().get_length() == 2 && weights.is_static(),
                          "weights must be a static 2-D tensor");
    NODE_VALIDATION_CHECK(node, weights[1].get_length() % group_bytes == 0, "weight rows must hold whole blocks");
}

// The inputs (K) a blob's rows hold, and its outputs (N).
static int64_t blob_inputs(const ov::Node* node, size_t port, size_t group_bytes) {
    return node->get_input_partial_shape(port)[1].get_length() / group_bytes * kBlock;
}

static int64_t blob_outputs(const ov::Node* node, size_t port) {
    return node->get_input_partial_shape(port)[0].get_length() * kRows;
}

// Activations [..., K] of f32 for weights of `k` inputs.
static void check_activations(const ov::Node* node, size_t port, size_t k) {
    NODE_VALIDATION_CHECK(node, node->get_input_element_type(port) == ov::element::f32, "activations must be f32");
    const auto& shape = node->get_input_partial_shape(port);
    NODE_VALIDATION_CHECK(node, shape.rank().is_static() && shape.size() >= 1, "activations must have a known rank");
    const auto& last = shape[shape.size() - 1];
    NODE_VALIDATION_CHECK(node, last.is_dynamic() || static_cast<size_t>(last.get_length()) == k,
                          "activations' last dimension must match the weights' blocks");
}

// Activations [..., K] in, [..., N] out, N from the blob at `port`.
static void set_matmul_output(ov::Node* node, int64_t k_expected, size_t port) {
    check_activations(node, 0, static_cast<size_t>(k_expected));
    auto shape = node->get_input_partial_shape(0);
    shape[shape.size() - 1] = blob_outputs(node, port);
    node->set_output_type(0, ov::element::f32, shape);
}

// The output tensor shaped as the activations with N outputs; rows and K of the call.
static float* shaped_output(ov::TensorVector& outputs, const ov::Tensor& x, size_t n, size_t& rows, size_t& k) {
    k = x.get_shape().back();
    rows = x.get_size() / k;
    auto shape = x.get_shape();
    shape.back() = n;
    outputs[0].set_shape(shape);
    return outputs[0].data<float>();
}

// The slices of x along its first axis that `indices` name, in a tensor over `buffer`.
static ov::Tensor pick(const ov::Tensor& x, const ov::Tensor& indices, std::vector<float>& buffer) {
    const ov::Shape& shape = x.get_shape();
    const size_t slice = x.get_size() / shape[0], count = indices.get_size();
    const bool wide = indices.get_element_type() == ov::element::i64;
    buffer.resize(std::max<size_t>(count * slice, 1));
    for (size_t i = 0; i < count; ++i) {
        const int64_t row = wide ? indices.data<const int64_t>()[i] : indices.data<const int32_t>()[i];
        OPENVINO_ASSERT(row >= 0 && static_cast<size_t>(row) < shape[0], "row index out of range");
        std::memcpy(buffer.data() + i * slice, x.data<const float>() + row * slice, slice * sizeof(float));
    }
    ov::Shape picked = shape;
    picked[0] = count;
    return ov::Tensor(ov::element::f32, picked, buffer.data());
}

// x [..., K] times the blob `w` of `groups` row groups into outputs[0] [..., N].
template <class F>
static void multiply(const ov::Tensor& x_in, const uint8_t* wb, size_t groups, ov::TensorVector& outputs) {
    const size_t n = groups * kRows;
    // The caller's buffers, named by reference: inside the tasks a thread_local would be each worker's own.
    thread_local QuantizedRows buffers;
    size_t rows, k;
    float* out = shaped_output(outputs, x_in, n, rows, k);
    const ActivationRows x = quantize_rows(x_in.data<const float>(), rows, k, k, buffers);
    ov::parallel_for(tasks_for(groups), [&](size_t task) { multiply_task<F>(wb, groups, x, rows, out, n, task); });
}

// The operation for one block format F; the named classes below are what the IR holds. An optional third input,
// i64 indices along the activations' first axis, multiplies those slices only: openvino-genai gives it its
// `sampled_tokens_indices` (the rows it samples from) where the output layer is an OpenVINO MatMul, and vinolm's
// genai engine wires it to this operation (engines/genai_logits.py), so a prompt's pass makes logits for its
// last row and not for every row (genai finds no MatMul to put its own Gather before).
template <class F>
class BlockMatMul : public ov::op::Op {
public:
    BlockMatMul() = default;
    explicit BlockMatMul(const ov::OutputVector& args) : Op(args) { constructor_validate_and_infer_types(); }

    void validate_and_infer_types() override {
        check_blob(this, 1, F::kGroupBytes);
        set_matmul_output(this, blob_inputs(this, 1, F::kGroupBytes), 1);
        if (get_input_size() == 3) {
            const auto indices = get_input_element_type(2);  // genai's paged pipelines convert them to i32
            NODE_VALIDATION_CHECK(this, indices == ov::element::i64 || indices == ov::element::i32,
                                  "row indices must be i64 or i32");
            auto shape = get_output_partial_shape(0);
            NODE_VALIDATION_CHECK(this, shape.size() >= 2, "activations to pick rows from need two axes or more");
            shape[0] = ov::Dimension::dynamic();
            set_output_type(0, ov::element::f32, shape);
        }
    }

    bool visit_attributes(ov::AttributeVisitor&) override { return true; }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        thread_local std::vector<float> picked;  // the caller's, as in multiply
        const ov::Tensor x = inputs.size() == 3 ? pick(inputs[0], inputs[2], picked) : inputs[0];
        multiply<F>(x, inputs[1].data<const uint8_t>(), inputs[1].get_shape()[0], outputs);
        return true;
    }
};

class Q4MatMul : public BlockMatMul<Q4_1Blocks> {
public:
    OPENVINO_OP("Q4MatMul", "extension", ov::op::Op);
    using BlockMatMul::BlockMatMul;

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<Q4MatMul>(args);
    }
};

class Q8MatMul : public BlockMatMul<Q8_0Blocks> {
public:
    OPENVINO_OP("Q8MatMul", "extension", ov::op::Op);
    using BlockMatMul::BlockMatMul;

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<Q8MatMul>(args);
    }
};

// silu(x) = x * logistic(x) for eight floats, computed as OpenVINO's CPU plugin computes Swish on AVX2 (oneDNN's
// logistic: e^-|x| from a degree-5 polynomial times 2 * 2^(n-1), then y = e / (e + 1), 1 - y for positive x; the
// same constants and operations in the same order), so a fused MLP multiplies bit for bit what the unfused graph's
// Swish and Multiply nodes produced (unit test), and its answers are the unfused export's.
static __m256 silu8(__m256 x) {
    auto constant = [](uint32_t bits) { return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(bits))); };
    const __m256 sign = constant(0x80000000), one = constant(0x3f800000), ln_flt_min = constant(0xc2aeac50);
    __m256 v = _mm256_or_ps(x, sign);  // -|x|: e^v <= 1
    const __m256 too_small = _mm256_cmp_ps(v, ln_flt_min, _CMP_LT_OS);
    v = _mm256_max_ps(_mm256_min_ps(v, constant(0x42b17218)), ln_flt_min);
    const __m256 n = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(v, constant(0x3fb8aa3b)), constant(0x3f000000)));
    const __m256 r = _mm256_fnmadd_ps(n, constant(0x3f317218), v);
    const __m256i exponent = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_sub_ps(n, one)), _mm256_set1_epi32(127));
    const __m256 half_scale = _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23)),
                                               _mm256_setzero_ps(), too_small);  // 2^(n-1)
    __m256 p = constant(0x3c07cfce);
    for (const uint32_t c : {0x3d2b9d0du, 0x3e2aad40u, 0x3efffee3u, 0x3f7ffffbu, 0x3f800000u})
        p = _mm256_fmadd_ps(p, r, constant(c));
    const __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, half_scale), constant(0x40000000));
    const __m256 y = _mm256_div_ps(e, _mm256_add_ps(e, one));
    const __m256 logistic = _mm256_blendv_ps(_mm256_sub_ps(one, y), y, _mm256_and_ps(x, sign));
    return _mm256_mul_ps(logistic, x);
}

// down(silu(gate(x)) * up(x)) for x [..., K] into outputs[0] [..., N]: gate and up hold `hidden_groups` row groups,
// down `out_groups`.
static void gated_mlp(const ov::Tensor& x_in, const uint8_t* gate, const uint8_t* up, const uint8_t* down,
                      size_t hidden_groups, size_t out_groups, ov::TensorVector& outputs) {
    using F = Q4_1Blocks;
    struct Buffers {
        QuantizedRows x, h;
        std::vector<float> gate, up;
    };
    const size_t hidden = hidden_groups * kRows, n = out_groups * kRows;
    size_t rows, k;
    float* out = shaped_output(outputs, x_in, n, rows, k);
    thread_local Buffers buffers;  // the caller's, as in multiply
    Buffers& b = buffers;
    b.gate.resize(rows * hidden);
    b.up.resize(rows * hidden);
    const ActivationRows x = quantize_rows(x_in.data<const float>(), rows, k, k, b.x);
    const size_t tasks = tasks_for(hidden_groups);
    ov::parallel_for(2 * tasks, [&](size_t task) {
        if (task < tasks)
            multiply_task<F>(gate, hidden_groups, x, rows, b.gate.data(), hidden, task);
        else
            multiply_task<F>(up, hidden_groups, x, rows, b.up.data(), hidden, task - tasks);
    });
    auto activate_row = [&](size_t r) {
        float* g = b.gate.data() + r * hidden;
        const float* u = b.up.data() + r * hidden;
        for (size_t j = 0; j < hidden; j += 8) {
            _mm256_storeu_ps(g + j, _mm256_mul_ps(silu8(_mm256_loadu_ps(g + j)), _mm256_loadu_ps(u + j)));
        }
    };
    if (rows == 1)
        activate_row(0);
    else
        ov::parallel_for(rows, activate_row);
    const ActivationRows h = quantize_rows(b.gate.data(), rows, hidden, hidden, b.h);
    ov::parallel_for(tasks_for(out_groups), [&](size_t task) { multiply_task<F>(down, out_groups, h, rows, out, n, task); });
}

// Q4_1 blocks an operation holds in its body, a model of its own whose results (named) are the blocks'
// Constants; the IR stores it as it stores a loop's body, the blocks in the same .bin file.
//
// Why not inputs: the CPU plugin infers an extension operation's output shape with its fallback, which treats every
// input's data as something the shape may depend on, so in a graph with a dynamic axis it cloned and validated the
// operation on every call (16-42 µs a node of a ~14 ms token step on Zen 3, docs/benchmarks.md section 36). An
// operation of OpenVINO's elementwise kinds gets the plugin's own inference instead (the input's shape, or the
// inputs' broadcast), run only when the inputs' shapes change, so the operations below take activations alone.
template <size_t N>
class Blocks {
public:
    Blocks() = default;
    explicit Blocks(std::shared_ptr<ov::Model> body) : m_body(std::move(body)) {}

    // Finds the blocks named `names` (in that order: the IR may reorder a body's results) and checks them.
    void resolve(const ov::Node* node, const std::array<const char*, N>& names) {
        NODE_VALIDATION_CHECK(node, m_body && m_body->get_results().size() == N && m_body->get_parameters().empty(),
                              "the operation's body must hold its weight blocks and nothing else");
        for (size_t i = 0; i < N; ++i) {
            m_blobs[i] = nullptr;
            for (const auto& result : m_body->get_results())
                if (result->get_friendly_name() == names[i])
                    m_blobs[i] = ov::as_type_ptr<ov::op::v0::Constant>(result->get_input_node_shared_ptr(0));
            NODE_VALIDATION_CHECK(node, m_blobs[i] && m_blobs[i]->get_element_type() == ov::element::u8 &&
                                            m_blobs[i]->get_shape().size() == 2 &&
                                            m_blobs[i]->get_shape()[1] % Q4_1Blocks::kGroupBytes == 0,
                                  "weight blocks must be u8 constants [N/8, K/32 * 160] named by their role");
        }
    }

    void visit(ov::AttributeVisitor& visitor) { visitor.on_attribute("body", m_body); }

    const std::shared_ptr<ov::Model>& body() const { return m_body; }
    const uint8_t* data(size_t i) const { return m_blobs[i]->template get_data_ptr<uint8_t>(); }
    size_t groups(size_t i) const { return m_blobs[i]->get_shape()[0]; }
    size_t inputs(size_t i) const { return m_blobs[i]->get_shape()[1] / Q4_1Blocks::kGroupBytes * kBlock; }
    size_t outputs(size_t i) const { return groups(i) * kRows; }

private:
    std::shared_ptr<ov::Model> m_body;
    std::array<std::shared_ptr<ov::op::v0::Constant>, N> m_blobs;
};

// An operation of OpenVINO's elementwise kind `Kind` whose N blocks are in its body (Blocks above).
template <class Kind, size_t N>
class HoldsBlocks : public Kind {
public:
    bool visit_attributes(ov::AttributeVisitor& visitor) override {
        m_blocks.visit(visitor);
        return true;
    }

    bool has_evaluate() const override { return true; }

protected:
    template <class... Args>
    explicit HoldsBlocks(std::shared_ptr<ov::Model> body, Args&&... kind) : Kind(std::forward<Args>(kind)...),
                                                                             m_blocks(std::move(body)) {}

    Blocks<N> m_blocks;
};

// A gated MLP as one operation: down(silu(gate(x)) * up(x)), the three weights in Q4_1 blocks (its body's gate, up
// and down). Why one: as separate nodes an MLP was five (three matmuls, Swish, Multiply), each with a `Reference`
// node's fixed cost; as this one it is one, and x is quantized once for gate and up. The matmuls' arithmetic is
// Q4MatMul's; silu is OpenVINO's (silu8 above), so the result is the five nodes' bit for bit. Of OpenVINO's unary
// elementwise kind (its output has x's shape), so the export fuses only where x does not come from an operation
// that just moves data: OpenVINO's MoveEltwiseUpThroughDataMov moves a unary elementwise operation above a Reshape
// or Transpose, where its input would not be x.
class Q4MLP : public HoldsBlocks<ov::op::util::UnaryElementwiseArithmetic, 3> {
public:
    OPENVINO_OP("Q4MLP", "extension", ov::op::util::UnaryElementwiseArithmetic);
    Q4MLP() : HoldsBlocks(nullptr) {}
    Q4MLP(const ov::Output<ov::Node>& x, std::shared_ptr<ov::Model> body) : HoldsBlocks(std::move(body), x) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        m_blocks.resolve(this, {"gate", "up", "down"});
        const auto& b = m_blocks;
        NODE_VALIDATION_CHECK(this, b.groups(0) == b.groups(1) && b.inputs(0) == b.inputs(1),
                              "gate and up weights must have the same shape");
        NODE_VALIDATION_CHECK(this, b.inputs(2) == b.outputs(0), "down's inputs must be gate's outputs");
        NODE_VALIDATION_CHECK(this, b.outputs(2) == b.inputs(0), "down's outputs must be as many as gate's inputs");
        check_activations(this, 0, b.inputs(0));
        set_output_type(0, ov::element::f32, get_input_partial_shape(0));
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        check_new_args_count(this, args);
        return std::make_shared<Q4MLP>(args[0], m_blocks.body());
    }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const auto& b = m_blocks;
        gated_mlp(inputs[0], b.data(0), b.data(1), b.data(2), b.groups(0), b.groups(2), outputs);
        return true;
    }
};

// A square Q4_1 matmul and the residual added to its result, as one operation: residual + x W^T (o_proj and the
// attention's residual connection in a Llama-style model), its weights its body's `weights`. Of OpenVINO's binary
// elementwise kind (its output is the inputs' broadcast: both are [..., K]); the addition is the one OpenVINO's Add
// made (f32, exact in either order), so the result is the two nodes' bit for bit, and one node's fixed cost is
// saved besides the shape inference.
class Q4MatMulAdd : public HoldsBlocks<ov::op::util::BinaryElementwiseArithmetic, 1> {
public:
    OPENVINO_OP("Q4MatMulAdd", "extension", ov::op::util::BinaryElementwiseArithmetic);
    Q4MatMulAdd() : HoldsBlocks(nullptr, ov::op::AutoBroadcastType::NUMPY) {}
    Q4MatMulAdd(const ov::Output<ov::Node>& x, const ov::Output<ov::Node>& residual, std::shared_ptr<ov::Model> body)
        : HoldsBlocks(std::move(body), x, residual, ov::op::AutoBroadcastType::NUMPY) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        m_blocks.resolve(this, {"weights"});
        NODE_VALIDATION_CHECK(this, m_blocks.outputs(0) == m_blocks.inputs(0), "the weights must be square");
        check_activations(this, 0, m_blocks.inputs(0));
        NODE_VALIDATION_CHECK(this, get_input_element_type(1) == ov::element::f32, "the residual must be f32");
        NODE_VALIDATION_CHECK(this, get_input_partial_shape(0).compatible(get_input_partial_shape(1)),
                              "the residual must have the activations' shape");
        set_output_type(0, ov::element::f32, get_input_partial_shape(0));
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        check_new_args_count(this, args);
        return std::make_shared<Q4MatMulAdd>(args[0], args[1], m_blocks.body());
    }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        multiply<Q4_1Blocks>(inputs[0], m_blocks.data(0), m_blocks.groups(0), outputs);
        OPENVINO_ASSERT(inputs[1].get_size() == outputs[0].get_size(), "the residual must have the activations' shape");
        float* out = outputs[0].data<float>();
        const float* residual = inputs[1].data<const float>();
        for (size_t i = 0, size = outputs[0].get_size(); i < size; ++i) out[i] += residual[i];
        return true;
    }
};

}  // namespace vinolm

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({std::make_shared<ov::OpExtension<vinolm::Q4MatMul>>(),
                                                            std::make_shared<ov::OpExtension<vinolm::Q8MatMul>>(),
                                                            std::make_shared<ov::OpExtension<vinolm::Q4MLP>>(),
                                                            std::make_shared<ov::OpExtension<vinolm::Q4MatMulAdd>>()}));
