// Dropout on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
//
// Work is cut into chunks of 64 elements: one 64-bit mask word, 16 Philox calls. A chunk's draws run
// as 16 lanes of philox4x32_10_lanes (SIMD multiplies), its keep bits become a small array of
// multipliers (scale or 0), and the data is multiplied by them with at::vec registers. Chunks are
// split among threads by at::parallel_for, one parallel region per call; the mask depends only on
// each element's index, so any split gives the same result.
#include <algorithm>
#include <cstring>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#include "common/dropout_checks.h"
#include "cpu/kernels/dropout_kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kChunk = 64;               // elements per 64-bit mask word
constexpr int kBlocksPerChunk = kChunk / 4;  // Philox calls per chunk
constexpr int64_t kGrainChunks = 32768 / kChunk;  // smaller calls stay on the calling thread

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// Bits 4 j + w (j < 32) of the result are bits j of m: word w's keep bits moved to their elements.
inline uint64_t spread_word_bits(uint64_t m, int w) { return _pdep_u64(m, 0x1111111111111111ull << w); }
#endif

#if defined(CPU_CAPABILITY_AVX512)
// philox4x32_10 on 16 counters at once (one per 32-bit lane); the same rounds as fusedopt/philox.h.
inline void mulhilo_lanes(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);                         // lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);   // lanes 1, 3, ...
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

inline uint64_t chunk_keep_bits(const DropoutRng& rng, int64_t c) {
  const uint64_t first_block = static_cast<uint64_t>(c) * kBlocksPerChunk;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // 16 blocks never straddle a 2**32 boundary of the block index (first_block is a multiple of 16).
  __m512i c0 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(rng.counter_base)));
  __m512i c1 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(rng.counter_base >> 32)));
  __m512i c2 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first_block))), lane);
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(first_block >> 32)));
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0), m1 = _mm512_set1_epi64(kPhiloxM1);
  uint32_t k0 = static_cast<uint32_t>(rng.seed), k1 = static_cast<uint32_t>(rng.seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    __m512i hi0, lo0, hi1, lo1;
    mulhilo_lanes(c0, m0, hi0, lo0);
    mulhilo_lanes(c2, m1, hi1, lo1);
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    c1 = lo1;
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c3 = lo0;
  }
  const __m512i t = _mm512_set1_epi32(static_cast<int>(rng.threshold));
  return spread_word_bits(_mm512_cmplt_epu32_mask(c0, t), 0) | spread_word_bits(_mm512_cmplt_epu32_mask(c1, t), 1) |
         spread_word_bits(_mm512_cmplt_epu32_mask(c2, t), 2) | spread_word_bits(_mm512_cmplt_epu32_mask(c3, t), 3);
}
#elif defined(CPU_CAPABILITY_AVX2)
inline void mulhilo_lanes(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Keep bits of 8 blocks starting at block `first` (bits 4 j + w, j < 8).
inline uint64_t eight_blocks_keep_bits(const DropoutRng& rng, uint64_t first) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i c0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(rng.counter_base)));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(rng.counter_base >> 32)));
  __m256i c2 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(first))), lane);
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(first >> 32)));
  const __m256i m0 = _mm256_set1_epi64x(kPhiloxM0), m1 = _mm256_set1_epi64x(kPhiloxM1);
  uint32_t k0 = static_cast<uint32_t>(rng.seed), k1 = static_cast<uint32_t>(rng.seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    __m256i hi0, lo0, hi1, lo1;
    mulhilo_lanes(c0, m0, hi0, lo0);
    mulhilo_lanes(c2, m1, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c3 = lo0;
  }
  // Unsigned u < t as signed compare after flipping the sign bits.
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i t = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(rng.threshold)), sign);
  auto keep = [&](__m256i u) {
    return static_cast<uint64_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t, _mm256_xor_si256(u, sign)))));
  };
  return spread_word_bits(keep(c0), 0) | spread_word_bits(keep(c1), 1) | spread_word_bits(keep(c2), 2) |
         spread_word_bits(keep(c3), 3);
}

inline uint64_t chunk_keep_bits(const DropoutRng& rng, int64_t c) {
  const uint64_t first_block = static_cast<uint64_t>(c) * kBlocksPerChunk;
  return eight_blocks_keep_bits(rng, first_block) | eight_blocks_keep_bits(rng, first_block + 8) << 32;
}
#else
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
  // Word w of block l is element 4 l + w.
  uint64_t bits = 0;
  for (int w = 0; w < 4; ++w) {
    for (int l = 0; l < kBlocksPerChunk; ++l) {
      bits |= static_cast<uint64_t>(ctr[w][l] < rng.threshold) << (4 * l + w);
    }
  }
  return bits;
}
#endif

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

// out[i] = in[i] * factor[i] for i < n, in math-type registers; factor is read in whole vectors, so it
// must be readable up to n rounded up to VecIO's step.
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

// The multipliers of the 8 elements of each possible mask byte (built once per thread and call), so
// turning a 64-bit mask word into 64 multipliers is 8 row copies.
template <typename opmath_t>
struct FactorTable {
  opmath_t rows[256][8];
  explicit FactorTable(opmath_t scale) {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < 8; ++j) rows[b][j] = dropout_factor<opmath_t>(b >> j & 1, scale);
  }
  void expand(uint64_t bits, opmath_t (&factor)[kChunk]) const {
    for (int j = 0; j < 8; ++j) std::memcpy(factor + 8 * j, rows[(bits >> (8 * j)) & 0xFF], sizeof(rows[0]));
  }
};

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
      const FactorTable<opmath_t> table(scale);
      for (int64_t c = first; c < last; ++c) {
        const int64_t len = std::min(kChunk, n - c * kChunk);
        const uint64_t bits = chunk_keep_bits(rng, c) & low_bits(len);
        store_mask_word(mask, c, bits, len);
        table.expand(bits, factor);
        multiply_by_factors(in + c * kChunk, out + c * kChunk, factor, len);
      }
    });
  });
}

void dropout_apply_kernel(const at::Tensor& input, const at::Tensor& output, const uint8_t* mask,
                          DropoutGroups groups, double p) {
  const int64_t group_size = groups.size;
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
        const FactorTable<opmath_t> table(scale);
        for (int64_t c = first; c < last; ++c) {
          const int64_t len = std::min(kChunk, n - c * kChunk);
          table.expand(load_mask_word(mask, c, len), factor);
          multiply_by_factors(in + c * kChunk, out + c * kChunk, factor, len);
        }
      });
      return;
    }
    if (groups.channels > 0) {
      // Channel innermost: memory is rows of `channels` elements, one per channel; the rows of one
      // batch entry (group_size of them) share one row of multipliers, made when the entry changes.
      const int64_t channels = groups.channels;
      const int64_t rows = n / channels;
      at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / channels), [&](int64_t first, int64_t last) {
        // Padded: multiply_by_factors loads whole vectors of factors past a short row's end.
        std::vector<opmath_t> factor(channels + kChunk, opmath_t(0));
        int64_t entry = -1;
        for (int64_t r = first; r < last; ++r) {
          if (r / group_size != entry) {
            entry = r / group_size;
            for (int64_t c = 0; c < channels; ++c) {
              const int64_t g = entry * channels + c;
              factor[c] = dropout_factor<opmath_t>(mask[g >> 3] >> (g & 7) & 1, scale);
            }
          }
          multiply_by_factors(in + r * channels, out + r * channels, factor.data(), channels);
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
