// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator. A 128-bit counter and a 64-bit key map to 128 random bits by ten rounds of
// two 32x32->64 multiplies and xors, so any element's random bits can be computed directly from
// (key, counter) without state: the same numbers on CPU and GPU, whatever the threads or grid.
//
// The counter layout follows torch's philox_engine / curand_init(seed, subsequence, offset): words 0-1
// hold the offset (in 128-bit steps), words 2-3 the subsequence; the key is the 64-bit seed.
#pragma once

#include <cstdint>

#include "fusedopt/macros.h"

namespace fusedopt {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;  // multipliers of the two S-boxes
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // key schedule: golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // key schedule: sqrt(3) - 1
constexpr int kPhiloxRounds = 10;

FUSEDOPT_INLINE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t product = static_cast<uint64_t>(a) * b;
  lo = static_cast<uint32_t>(product);
  hi = static_cast<uint32_t>(product >> 32);
#endif
}

// One Philox4x32 round on ctr[4] with key (k0, k1).
FUSEDOPT_INLINE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                                  uint32_t k1) {
  uint32_t hi0, lo0, hi1, lo1;
  philox_mulhilo(kPhiloxM0, c0, hi0, lo0);
  philox_mulhilo(kPhiloxM1, c2, hi1, lo1);
  const uint32_t n0 = hi1 ^ c1 ^ k0;
  const uint32_t n2 = hi0 ^ c3 ^ k1;
  c0 = n0;
  c1 = lo1;
  c2 = n2;
  c3 = lo0;
}

// Philox4x32-10: replaces ctr[0..3] by the 128 random bits of (ctr, key).
FUSEDOPT_INLINE void philox4x32_10(uint32_t (&ctr)[4], uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < kPhiloxRounds; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    philox_round(ctr[0], ctr[1], ctr[2], ctr[3], k0, k1);
  }
}

// The same on L independent counters held word-major (ctr[w][lane]). Plain loops over the lanes, which
// the host compiler turns into SIMD multiplies (vpmuludq) for each CPU variant; the results equal L
// calls of philox4x32_10.
template <int L>
FUSEDOPT_INLINE void philox4x32_10_lanes(uint32_t (&ctr)[4][L], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < kPhiloxRounds; ++r) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    for (int l = 0; l < L; ++l) {
      const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * ctr[0][l];
      const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * ctr[2][l];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ ctr[1][l] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ ctr[3][l] ^ k1;
      ctr[1][l] = static_cast<uint32_t>(p1);
      ctr[3][l] = static_cast<uint32_t>(p0);
      ctr[0][l] = n0;
      ctr[2][l] = n2;
    }
  }
}

}  // namespace fusedopt
