// Dropout masks from Philox4x32-10 (fusedopt/philox.h), shared by the CPU and CUDA kernels.
//
// Element i of a call (in the order the call walks its elements: memory order for the layouts taken
// where they are, see DropoutGroups below, else row-major logical order) is kept when the
// 32-bit word i % 4 of Philox(key = seed, counter = {offset/4 (64 bit), subsequence = i / 4 (64 bit)})
// is below `threshold`. That is torch's own mapping for curand_init(seed, subsequence, offset): block k
// of four elements draws exactly the four numbers a torch CUDA thread with subsequence k would, which
// keeps our draws apart from torch's as long as both take their offsets from the same generator.
//
// Resolution: the keep probability is exactly threshold / 2**32 with threshold = round((1 - p) * 2**32)
// (clamped to [1, 2**32 - 1] for 0 < p < 1), i.e. within 2**-33 of 1 - p; p = 0 and p = 1 are exact
// (handled by the entry points without drawing). Every random bit of a Philox call is used: 4 x 32
// bits for 4 elements.
//
// The mask is packed: bit j of byte b is element 8 * b + j; bits past the last element are zero. Which
// bit an element of a tensor has is DropoutGroups' business (below): element order is memory order.
#pragma once

#include <cmath>
#include <cstdint>

#include "fusedopt/philox.h"

namespace fusedopt {

struct DropoutRng {
  uint64_t seed;
  uint64_t counter_base;  // the philox offset / 4 (torch counts offsets in 32-bit draws)
  uint32_t threshold;     // keep when the element's 32-bit draw is below this
};

// threshold for 0 < p < 1 (see the resolution note above).
inline uint32_t dropout_keep_threshold(double p) {
  const double t = std::nearbyint(std::ldexp(1.0 - p, 32));
  if (t < 1.0) return 1u;
  if (t > 4294967295.0) return 4294967295u;
  return static_cast<uint32_t>(t);
}

// The four draws of elements 4k .. 4k+3.
FUSEDOPT_INLINE void dropout_block_draws(const DropoutRng& rng, uint64_t k, uint32_t (&out)[4]) {
  out[0] = static_cast<uint32_t>(rng.counter_base);
  out[1] = static_cast<uint32_t>(rng.counter_base >> 32);
  out[2] = static_cast<uint32_t>(k);
  out[3] = static_cast<uint32_t>(k >> 32);
  philox4x32_10(out, static_cast<uint32_t>(rng.seed), static_cast<uint32_t>(rng.seed >> 32));
}

// Mask byte b: elements 8b .. 8b+7, i.e. blocks 2b and 2b+1 (bits past n are zero).
FUSEDOPT_INLINE uint8_t dropout_mask_byte(const DropoutRng& rng, uint64_t b, uint64_t n) {
  uint32_t lo[4], hi[4];
  dropout_block_draws(rng, 2 * b, lo);
  dropout_block_draws(rng, 2 * b + 1, hi);
  unsigned byte = 0;
  for (int j = 0; j < 4; ++j) {
    byte |= static_cast<unsigned>(lo[j] < rng.threshold) << j;
    byte |= static_cast<unsigned>(hi[j] < rng.threshold) << (j + 4);
  }
  const uint64_t first = 8 * b;
  if (first + 8 > n) byte &= (1u << (n - first)) - 1u;
  return static_cast<uint8_t>(byte);
}

// The mask bit (group) of each element of a dense tensor walked in memory order (element k is the k-th
// in memory; for a contiguous tensor that is row-major order). size: elements per group (1: one bit per
// element, in memory order). channels == 0: each group is one run of `size` elements, as in a
// contiguous (N, C, *spatial) tensor: group k / size. channels > 0: channel-wise groups in memory where
// the channel is the innermost dimension (channels-last, (N, *spatial, C)): element k is channel
// k % channels of batch entry k / (size * channels), so its group (n * channels + c, as in the
// contiguous layout) is the same whatever the layout.
struct DropoutGroups {
  int64_t size = 1;
  int64_t channels = 0;

  FUSEDOPT_INLINE int64_t of(int64_t k) const {
    if (channels == 0) return k / size;
    return k / (size * channels) * channels + k % channels;
  }
};

// The multiplier of a kept / dropped element: torch multiplies by the mask and by 1 / (1 - p), so a
// dropped inf or NaN becomes NaN there too.
template <typename opmath_t>
FUSEDOPT_INLINE opmath_t dropout_factor(bool keep, opmath_t scale) {
  return keep ? scale : opmath_t(0);
}

}  // namespace fusedopt
