// vinolm's 4-bit weight matmul for x86 CPUs with AVX2: llama.cpp's Q4_1 arithmetic as an OpenVINO operation.
//
// Why it exists: without VNNI (AVX2-only CPUs such as AMD Zen 2/3), OpenVINO's CPU plugin multiplies compressed
// weights in f32 (`brgemm_avx2_f32`), unpacking every weight to a float each token; llama.cpp multiplies 8-bit
// integers (`vpmaddubsw`) and decodes faster. This op does what llama.cpp does, inside the graph OpenVINO runs, so
// both of vinolm's OpenVINO engines and the server keep their pipeline (docs/benchmarks.md section 31).
//
// Weights (input 1, u8 [N/8, K/32 * 160]): blocks of 32 along K, each with an f16 scale d and an f16 minimum m
// (w = d*q + m, q in 0..15: llama.cpp's Q4_1), repacked by 8 output rows so that one 256-bit load feeds two rows:
// for rows 8g..8g+7 and block b, 160 bytes = 8 scales, 8 minimums, then each row's 16 nibble bytes (byte j holds
// element j in its low nibble and element j+16 in its high one). Activations (input 0, f32 [..., K]) are quantized
// to int8 per block of 32 on the fly (llama.cpp's Q8_1), so a block contributes d*dx*sum(q*xq) + m*dx*sum(xq).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/op/op.hpp>

namespace vinolm {

constexpr size_t kBlock = 32;      // weights (and activations) per block along K
constexpr size_t kRows = 8;        // output rows repacked together
constexpr size_t kGroupBytes = 160;  // one block of 8 rows: 8 f16 scales, 8 f16 minimums, 8 x 16 nibble bytes

// Activations of one call, quantized per block: int8 values, scales, and scale * sum of the block's values.
struct QuantizedRows {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<float> s;
};

static void quantize_block(const float* x, int8_t* q, float* d, float* s) {
    float amax = 0.f;
    for (size_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float scale = amax / 127.f;
    const float inverse = scale != 0.f ? 1.f / scale : 0.f;
    int sum = 0;
    for (size_t j = 0; j < kBlock; ++j) {
        const int v = static_cast<int>(std::nearbyint(x[j] * inverse));
        q[j] = static_cast<int8_t>(v);
        sum += v;
    }
    *d = scale;
    *s = scale * static_cast<float>(sum);
}

// Eight output rows (g) for one activation row: two rows per 256-bit lane pair, one accumulator per pair.
static void dot_group(const uint8_t* w, const int8_t* xq, const float* xd, const float* xs, size_t blocks,
                      float* out) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 offset = _mm256_setzero_ps();
    for (size_t b = 0; b < blocks; ++b, w += kGroupBytes) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
        const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
        const __m256 dx = _mm256_mul_ps(d, _mm256_set1_ps(xd[b]));
        offset = _mm256_fmadd_ps(m, _mm256_set1_ps(xs[b]), offset);
        const __m128i* x = reinterpret_cast<const __m128i*>(xq + b * kBlock);
        const __m256i x_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(x));
        const __m256i x_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(x + 1));
        for (int pair = 0; pair < 4; ++pair) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 + pair * 32));
            const __m256i q_lo = _mm256_and_si256(v, low);
            const __m256i q_hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
            // q <= 15 and |xq| <= 127: two products of a pair sum to at most 3810, four to 7620 (no int16 overflow).
            const __m256i sums = _mm256_add_epi16(_mm256_maddubs_epi16(q_lo, x_lo), _mm256_maddubs_epi16(q_hi, x_hi));
            const __m256 dots = _mm256_cvtepi32_ps(_mm256_madd_epi16(sums, ones));
            const __m256i rows = _mm256_setr_epi32(2 * pair, 2 * pair, 2 * pair, 2 * pair, 2 * pair + 1,
                                                   2 * pair + 1, 2 * pair + 1, 2 * pair + 1);
            acc[pair] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dx, rows), dots, acc[pair]);
        }
    }
    alignas(32) float lanes[4][8];
    alignas(32) float offsets[8];
    for (int pair = 0; pair < 4; ++pair) _mm256_store_ps(lanes[pair], acc[pair]);
    _mm256_store_ps(offsets, offset);
    for (int pair = 0; pair < 4; ++pair) {
        const float* a = lanes[pair];
        out[2 * pair] = a[0] + a[1] + a[2] + a[3] + offsets[2 * pair];
        out[2 * pair + 1] = a[4] + a[5] + a[6] + a[7] + offsets[2 * pair + 1];
    }
}

class Q4MatMul : public ov::op::Op {
public:
    OPENVINO_OP("Q4MatMul", "extension");

    Q4MatMul() = default;
    explicit Q4MatMul(const ov::OutputVector& args) : Op(args) { constructor_validate_and_infer_types(); }

    void validate_and_infer_types() override {
        auto shape = get_input_partial_shape(0);
        const auto weights = get_input_partial_shape(1);
        NODE_VALIDATION_CHECK(this, get_input_element_type(0) == ov::element::f32, "activations must be f32");
        NODE_VALIDATION_CHECK(this, get_input_element_type(1) == ov::element::u8, "weights must be u8 blocks");
        NODE_VALIDATION_CHECK(this, weights.rank().is_static() && weights.rank().get_length() == 2 &&
                                        weights.is_static(), "weights must be a static 2-D tensor");
        NODE_VALIDATION_CHECK(this, shape.rank().is_static(), "activations must have a known rank");
        const auto& k = shape[shape.size() - 1];
        const int64_t row_bytes = weights[1].get_length();
        NODE_VALIDATION_CHECK(this, row_bytes % kGroupBytes == 0, "weight rows must hold whole blocks");
        NODE_VALIDATION_CHECK(this, k.is_dynamic() || k.get_length() == row_bytes / kGroupBytes * kBlock,
                              "activations' last dimension must match the weights' blocks");
        shape[shape.size() - 1] = weights[0].get_length() * kRows;
        set_output_type(0, ov::element::f32, shape);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<Q4MatMul>(args);
    }

    bool visit_attributes(ov::AttributeVisitor&) override { return true; }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Tensor& x = inputs[0];
        const ov::Tensor& w = inputs[1];
        const size_t k = x.get_shape().back();
        const size_t rows = x.get_size() / k;
        const size_t blocks = k / kBlock;
        const size_t groups = w.get_shape()[0];
        const size_t n = groups * kRows;
        auto shape = x.get_shape();
        shape.back() = n;
        outputs[0].set_shape(shape);
        const float* xf = x.data<const float>();
        const uint8_t* wb = w.data<const uint8_t>();
        float* out = outputs[0].data<float>();

        // The caller's buffers, named by reference: inside the tasks a thread_local would be each worker's own.
        thread_local QuantizedRows buffers;
        QuantizedRows& act = buffers;
        act.q.resize(rows * k);
        act.d.resize(rows * blocks);
        act.s.resize(rows * blocks);
        auto quantize_row = [&](size_t r) {
            for (size_t b = 0; b < blocks; ++b) {
                const size_t i = r * blocks + b;
                quantize_block(xf + i * kBlock, act.q.data() + i * kBlock, &act.d[i], &act.s[i]);
            }
        };
        if (rows == 1)  // a token step: not worth waking the other threads
            quantize_row(0);
        else
            ov::parallel_for(rows, quantize_row);

        // Four row groups (32 outputs) a task: every activation row is multiplied while they are in cache.
        constexpr size_t kGroupsPerTask = 4;
        ov::parallel_for((groups + kGroupsPerTask - 1) / kGroupsPerTask, [&](size_t task) {
            const size_t first = task * kGroupsPerTask, last = std::min(groups, first + kGroupsPerTask);
            for (size_t r = 0; r < rows; ++r) {
                const int8_t* xq = act.q.data() + r * k;
                const float* xd = act.d.data() + r * blocks;
                const float* xs = act.s.data() + r * blocks;
                for (size_t g = first; g < last; ++g)
                    dot_group(wb + g * blocks * kGroupBytes, xq, xd, xs, blocks, out + r * n + g * kRows);
            }
        });
        return true;
    }
};

}  // namespace vinolm

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({std::make_shared<ov::OpExtension<vinolm::Q4MatMul>>()}));
