// Dropout on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
//
// Work is cut into chunks of 64 elements: one 64-bit mask word, 16 Philox calls. A chunk's draws run
// as 16 lanes of philox4x32_10_lanes (SIMD multiplies), its keep bits become a small array of
// multipliers (scale or 0), and the data is multiplied by them with at::vec registers. Chunks are
// split among threads by at::parallel_for, one parallel region per call; the mask depends only on
// each element's index, so any split gives the same result.
#include <algorithm>
#include <cstring>

#include "common/dropout_checks.h"
#include "cpu/kernels/dropout_kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kChunk = 64;               // elements per 64-bit mask word
constexpr int kBlocksPerChunk = kChunk / 4;  // Philox calls per chunk
constexpr int64_t kGrainChunks = 32768 / kChunk;  // smaller calls stay on the calling thread

// Keep bits of the elements [64 c, 64 c + 64): bit i is element 64 c + i.
inline uint64_t chunk_keep_bits(const DropoutRng& rng, int64_t c) {
  uint32_t ctr[4][kBlocksPerChunk];
  const uint64_t first_block = static_cast<uint64_t>(c) * kBlocksPerChunk;
  for (int l = 0; l < kBlocksPerChunk; ++l) {
    const uint64_t k = first_block + l;
    ctr[0][l] = static_cast<uint32_t>(rng.counter_base);
    ctr[1][l] = static_cast<uint32_t>(rng.counter_base >> 32);
    ctr[2][l] = static_cast<uint32_t>(k);
    ctr[3][l] = static_cast<uint32_t>(k >> 32);
  }
  philox4x32_10_lanes<kBlocksPerChunk>(ctr, static_cast<uint32_t>(rng.seed),
                                       static_cast<uint32_t>(rng.seed >> 32));
  // Word w of block l is element 4 l + w. Per word, 16 compares give 16 bits at stride 4.
  uint64_t bits = 0;
  for (int w = 0; w < 4; ++w) {
    for (int l = 0; l < kBlocksPerChunk; ++l) {
      bits |= static_cast<uint64_t>(ctr[w][l] < rng.threshold) << (4 * l + w);
    }
  }
  return bits;
}

inline uint64_t low_bits(int64_t len) { return len >= 64 ? ~uint64_t(0) : (uint64_t(1) << len) - 1; }

inline void store_mask_word(uint8_t* mask, int64_t c, uint64_t bits, int64_t len) {
  const int64_t bytes = (len + 7) / 8;
  for (int64_t j = 0; j < bytes; ++j) mask[8 * c + j] = static_cast<uint8_t>(bits >> (8 * j));
}

inline uint64_t load_mask_word(const uint8_t* mask, int64_t c, int64_t len) {
  const int64_t bytes = (len + 7) / 8;
  uint64_t bits = 0;
  for (int64_t j = 0; j < bytes; ++j) bits |= static_cast<uint64_t>(mask[8 * c + j]) << (8 * j);
  return bits;
}

// out[i] = in[i] * factor[i] for i < n (n <= kChunk), in math-type registers.
template <typename scalar_t, typename opmath_t>
inline void multiply_by_factors(const scalar_t* in, scalar_t* out, const opmath_t* factor, int64_t n) {
  using IO = VecIO<scalar_t>;
  using V = typename IO::V;
  V regs[IO::kParts];
  for (int64_t i = 0; i < n; i += IO::kStep) {
    const int64_t len = std::min<int64_t>(IO::kStep, n - i);
    IO::load(in + i, regs, len);
    for (int part = 0; part < IO::kParts; ++part) {
      regs[part] = regs[part] * V::loadu(factor + i + part * V::size());
    }
    IO::store(out + i, regs, len);
  }
}

// out[i] = in[i] * f for i < n.
template <typename scalar_t, typename opmath_t>
inline void multiply_by_constant(const scalar_t* in, scalar_t* out, opmath_t f, int64_t n) {
  using IO = VecIO<scalar_t>;
  using V = typename IO::V;
  const V fv(f);
  V regs[IO::kParts];
  for (int64_t i = 0; i < n; i += IO::kStep) {
    const int64_t len = std::min<int64_t>(IO::kStep, n - i);
    IO::load(in + i, regs, len);
    for (int part = 0; part < IO::kParts; ++part) regs[part] = regs[part] * fv;
    IO::store(out + i, regs, len);
  }
}

template <typename opmath_t>
inline void bits_to_factors(uint64_t bits, opmath_t scale, opmath_t (&factor)[kChunk]) {
  for (int i = 0; i < kChunk; ++i) factor[i] = (bits >> i & 1u) ? scale : opmath_t(0);
}

template <typename opmath_t>
opmath_t scale_for(double p) {
  return p < 1.0 ? dropout_scale<opmath_t>(p) : opmath_t(0);
}

}  // namespace

void dropout_forward_kernel(int64_t n, const at::Tensor& input, const at::Tensor& output, uint8_t* mask,
                            const DropoutRng& rng, double p) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (chunks == 0) return;
  if (!input.defined()) {
    at::parallel_for(0, chunks, kGrainChunks, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        const int64_t len = std::min(kChunk, n - c * kChunk);
        store_mask_word(mask, c, chunk_keep_bits(rng, c) & low_bits(len), len);
      }
    });
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fusedopt.dropout", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const opmath_t scale = scale_for<opmath_t>(p);
    at::parallel_for(0, chunks, kGrainChunks, [&](int64_t first, int64_t last) {
      alignas(64) opmath_t factor[kChunk];
      for (int64_t c = first; c < last; ++c) {
        const int64_t len = std::min(kChunk, n - c * kChunk);
        const uint64_t bits = chunk_keep_bits(rng, c) & low_bits(len);
        store_mask_word(mask, c, bits, len);
        bits_to_factors(bits, scale, factor);
        multiply_by_factors(in + c * kChunk, out + c * kChunk, factor, len);
      }
    });
  });
}

void dropout_apply_kernel(const at::Tensor& input, const at::Tensor& output, const uint8_t* mask,
                          int64_t group_size, double p) {
  const int64_t n = input.numel();
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fusedopt.dropout_apply", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const opmath_t scale = scale_for<opmath_t>(p);
    if (group_size == 1) {
      const int64_t chunks = (n + kChunk - 1) / kChunk;
      at::parallel_for(0, chunks, kGrainChunks, [&](int64_t first, int64_t last) {
        alignas(64) opmath_t factor[kChunk];
        for (int64_t c = first; c < last; ++c) {
          const int64_t len = std::min(kChunk, n - c * kChunk);
          bits_to_factors(load_mask_word(mask, c, len), scale, factor);
          multiply_by_factors(in + c * kChunk, out + c * kChunk, factor, len);
        }
      });
      return;
    }
    // Channel-wise: one bit per row of group_size elements; threads split elements, not rows, so a few
    // large channels still use every thread.
    at::parallel_for(0, n, 32768, [&](int64_t first, int64_t last) {
      int64_t i = first;
      while (i < last) {
        const int64_t row = i / group_size;
        const int64_t stop = std::min(last, (row + 1) * group_size);
        const bool keep = mask[row >> 3] >> (row & 7) & 1;
        multiply_by_constant(in + i, out + i, keep ? scale : opmath_t(0), stop - i);
        i = stop;
      }
    });
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
