// Batch normalization: the per-element rules and the statistics combiners, shared by the CPU kernels
// (T = at::vec::Vectorized<float/double>, one SIMD register of channels or elements) and the CUDA
// kernels (T = float/double). Counts are int64 everywhere; they turn into the math type only inside
// ratios, so that merging millions of values loses nothing to a float count.
//
// Kernels feed these combiners x - shift, with shift the channel's first value, and add shift back to
// the final mean: the rounding of many merges is then relative to the data's spread, not its mean.
#pragma once

#include <cstdint>

#include "fusedopt/math_ops.h"

namespace fusedopt {

// Adds one value to a running (count, mean, m2) with Welford's update; m2 is the sum of squared
// deviations from the mean. Used per thread by the CUDA kernels; `count` is the count after adding.
template <typename T>
FUSEDOPT_INLINE void welford_add(T& mean, T& m2, int64_t count, T x) {
  using Ops = MathOps<T>;
  using S = typename Ops::scalar_t;
  const T delta = x - mean;
  mean = Ops::fma(delta, Ops::splat(S(1) / S(count)), mean);
  m2 = Ops::fma(delta, x - mean, m2);
}

// Chan et al.'s merge of two partial (count, mean, m2) into the first: no sum of squares is ever
// formed, so data with a mean far larger than its spread keeps its variance (no cancellation).
// A side with count 0 contributes nothing (its mean and m2 are ignored).
template <typename T>
FUSEDOPT_INLINE void chan_merge(T& mean_a, T& m2_a, int64_t& count_a, T mean_b, T m2_b, int64_t count_b) {
  using Ops = MathOps<T>;
  using S = typename Ops::scalar_t;
  if (count_b == 0) return;
  const int64_t count = count_a + count_b;
  const S frac_b = S(count_b) / S(count);
  const T delta = mean_b - mean_a;
  mean_a = Ops::fma(delta, Ops::splat(frac_b), mean_a);
  // delta^2 * na * nb / n, written as delta * (delta * na * frac_b)
  m2_a = m2_a + m2_b + delta * (delta * Ops::splat(S(count_a) * frac_b));
  count_a = count;
}

template <typename S>
FUSEDOPT_INLINE S bn_invstd(S var, double eps) {
  return S(1) / MathOps<S>::sqrt(var + S(eps));
}

// Forward, per channel: y = (x - mean) * scale + shift with scale = weight * invstd, shift = bias.
// Subtracting the mean first keeps data with a large mean exact where x * scale + (shift - mean *
// scale) would cancel.
template <typename S>
struct BnForwardCoeffs {
  S mean, scale, shift;
};

template <typename S>
FUSEDOPT_INLINE BnForwardCoeffs<S> bn_forward_coeffs(S mean, S var, double eps, const S* weight,
                                                    const S* bias) {
  const S invstd = bn_invstd(var, eps);
  return {mean, weight ? *weight * invstd : invstd, bias ? *bias : S(0)};
}

template <typename T>
FUSEDOPT_INLINE T bn_forward(T x, T mean, T scale, T shift) {
  return MathOps<T>::fma(x - mean, scale, shift);
}

// Backward of training-mode batch norm, per channel, from the two reductions over the channel's
// `count` values: sum_dy = sum(dy), sum_dy_xmu = sum(dy * (x - mean)):
//   grad_x = (dy - sum_dy / count - (x - mean) * invstd^2 * sum_dy_xmu / count) * invstd * weight
template <typename S>
struct BnBackwardCoeffs {
  S mean, mean_dy, xmu_coeff, scale;
};

template <typename S>
FUSEDOPT_INLINE BnBackwardCoeffs<S> bn_backward_coeffs(S mean, S var, double eps, const S* weight,
                                                      S sum_dy, S sum_dy_xmu, int64_t count) {
  const S invstd = bn_invstd(var, eps);
  const S inv_count = S(1) / S(count);
  return {mean, sum_dy * inv_count, sum_dy_xmu * inv_count * invstd * invstd,
          weight ? *weight * invstd : invstd};
}

template <typename T>
FUSEDOPT_INLINE T bn_backward(T dy, T x, T mean, T mean_dy, T xmu_coeff, T scale) {
  return (dy - MathOps<T>::fma(x - mean, xmu_coeff, mean_dy)) * scale;
}

// torch's running-statistics rule for one channel: running = momentum * batch + (1 - momentum) * running,
// where batch is the batch mean, or the unbiased batch variance var * count / (count - 1) (the biased
// variance itself when count <= 1).
template <typename S>
FUSEDOPT_INLINE S bn_running_update(S running, S batch, S momentum) {
  return momentum * batch + (S(1) - momentum) * running;
}

template <typename S>
FUSEDOPT_INLINE S bn_unbiased_var(S var, int64_t count) {
  return count > 1 ? var * S(double(count) / double(count - 1)) : var;
}

// One channel of a running buffer (scalar_t) updated from its batch statistic (stat_t: the mean, or with
// is_var the biased variance over `count` values), in acc_t; what the CPU loop and the CUDA kernel run.
template <typename acc_t, typename scalar_t, typename stat_t>
FUSEDOPT_INLINE scalar_t bn_running_channel(scalar_t running, stat_t batch, int64_t count, acc_t momentum,
                                            bool is_var) {
  const acc_t b = is_var ? bn_unbiased_var<acc_t>(static_cast<acc_t>(batch), count) : static_cast<acc_t>(batch);
  return static_cast<scalar_t>(bn_running_update<acc_t>(static_cast<acc_t>(running), b, momentum));
}

}  // namespace fusedopt
