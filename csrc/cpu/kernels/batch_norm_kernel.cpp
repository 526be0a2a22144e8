// Batch norm on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
//
// Two walks of an (N, C, *spatial) input (common/batch_norm_checks.h):
//   N x C x S (contiguous): channels in parallel, each channel's values vectorised along S;
//   rows x C (channels last): rows in parallel, vectorised along C, each thread keeping per-channel
//   partials that are merged in a fixed order afterwards (same result for the same thread count).
// Statistics are exact-minded: each block of values gets its mean and m2 in two passes over data
// still in L1 (one pass over memory), and blocks are combined with Chan's merge (fusedopt/batch_norm.h).
// Values are shifted by the channel's first value before any of this (x - shift is exact for data
// near it), so the rounding of the many merges is relative to the spread, not to a large mean.
#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/kernels/batch_norm_kernels.h"
#include "cpu/multi_tensor_cpu.h"
#include "fusedopt/batch_norm.h"

namespace fusedopt::cpu::CPU_CAPABILITY {
namespace {

// Values per block of the N x C x S statistics walk (a multiple of every vector width).
constexpr int64_t kStatsBlock = 1024;
// Rows per block of the channels-last walks: a block's rows x C values stay in L1/L2 between passes.
constexpr int64_t kRowBlock = 32;
// Work per thread below which a loop stays on fewer threads.
constexpr int64_t kGrainElements = 32768;
// Reductions flush their vector accumulators into double scalars every this many values per lane.
constexpr int64_t kFlushEvery = 4096;

template <typename V>
inline typename V::value_type hsum(const V& v) {
  __at_align__ typename V::value_type a[V::size()];
  v.store(a);
  typename V::value_type s = 0;
  for (int i = 0; i < V::size(); ++i) s += a[i];
  return s;
}

// A per-channel coefficient register for lanes [j, j + V::size()) of C channels (zeros past C).
template <typename V>
inline V load_channels(const typename V::value_type* a, int64_t j, int64_t C) {
  const int64_t n = C - j;
  if (n >= V::size()) return V::loadu(a + j);
  return n > 0 ? V::loadu(a + j, n) : V(0);
}

// t with its lanes at and past `valid` zeroed (the padding of a partial load).
template <typename V>
inline V first_lanes(const V& t, int64_t valid) {
  if (valid >= V::size()) return t;
  return valid > 0 ? V::set(V(0), t, valid) : V(0);
}

// Welford state of a channel's values, added block by block: each block's mean and m2 in two passes
// over values still in L1, then Chan's merge.
template <typename scalar_t>
struct RunStats {
  using IO = VecIO<scalar_t>;
  using opmath_t = typename IO::opmath_t;
  using V = Vectorized<opmath_t>;
  opmath_t shift = 0;  // subtracted from every value; mean is of x - shift
  opmath_t mean = 0, m2 = 0;
  int64_t count = 0;

  // One block: `runs` runs of `len` values, run r at p + r * stride (runs * len <= kStatsBlock, so the
  // second pass finds it in L1). Short runs (the 7x7 planes of a ResNet's last stage) are grouped
  // into one block, so the reductions and the merge are paid per block, not per run; a run's last
  // partial vector is masked, not walked one value at a time.
  void add_block(const scalar_t* p, int64_t stride, int64_t len, int64_t runs) {
    constexpr int64_t kStep = IO::kStep;
    // fn(register, valid lanes) for every vector of the block, in memory order.
    auto walk = [&](auto&& fn) {
      V v[IO::kParts];
      for (int64_t r = 0; r < runs; ++r) {
        const scalar_t* q = p + r * stride;
        for (int64_t i = 0; i < len; i += kStep) {
          const int64_t width = std::min(kStep, len - i);
          IO::load(q + i, v, width);
          for (int k = 0; k < IO::kParts; ++k) fn(v[k], width - k * V::size());
        }
      }
    };
    const V vshift(shift);
    V acc(0);
    walk([&](const V& x, int64_t valid) { acc = acc + first_lanes(x - vshift, valid); });
    const int64_t n = len * runs;
    const opmath_t block_mean = hsum(acc) / static_cast<opmath_t>(n);
    const V vmean(block_mean);
    V sq(0);
    walk([&](const V& x, int64_t valid) {
      const V d = first_lanes((x - vshift) - vmean, valid);
      sq = at::vec::fmadd(d, d, sq);
    });
    chan_merge(mean, m2, count, block_mean, hsum(sq), n);
  }

  // A contiguous run of any length, in blocks of kStatsBlock values.
  void add_run(const scalar_t* p, int64_t len) {
    for (int64_t b = 0; b < len; b += kStatsBlock) add_block(p + b, 0, std::min(kStatsBlock, len - b), 1);
  }
};

template <typename opmath_t>
inline void finish_stats(opmath_t mean, opmath_t m2, int64_t count, opmath_t* mean_out, opmath_t* var_out) {
  // An empty channel has no statistics: NaN, as torch's mean/var of nothing.
  *mean_out = count > 0 ? mean : std::numeric_limits<opmath_t>::quiet_NaN();
  *var_out = count > 0 ? m2 / static_cast<opmath_t>(count) : std::numeric_limits<opmath_t>::quiet_NaN();
}

// Number of partial slots of a channels-last walk over `rows` rows of C: one per thread at most,
// and none smaller than the grain.
inline int64_t row_chunks(int64_t rows, int64_t C) {
  const int64_t by_size = std::max<int64_t>(1, rows * C / kGrainElements);
  return std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(at::get_num_threads()), by_size, rows}));
}

// Mean and biased variance of channel c of an N x C x S input.
template <typename scalar_t>
void channel_stats_nchw(const BnLayout& l, const scalar_t* x, int64_t c, typename VecIO<scalar_t>::opmath_t* mean,
                        typename VecIO<scalar_t>::opmath_t* var) {
  using opmath_t = typename VecIO<scalar_t>::opmath_t;
  const int64_t N = l.N, C = l.C, S = l.S;
  RunStats<scalar_t> st;
  if (N > 0 && S > 0) st.shift = static_cast<opmath_t>(x[c * S]);
  if (S >= kStatsBlock / 2) {
    for (int64_t n = 0; n < N; ++n) st.add_run(x + (n * C + c) * S, S);
  } else if (S > 0) {
    const int64_t group = kStatsBlock / S;  // planes per block
    for (int64_t n = 0; n < N; n += group) st.add_block(x + (n * C + c) * S, C * S, S, std::min(group, N - n));
  }
  finish_stats(st.shift + st.mean, st.m2, st.count, mean, var);
}

// Channels in parallel over an N x C x S walk; fn(c) for each channel.
template <typename Fn>
void parallel_channels(const BnLayout& l, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, l.N * l.S));
  at::parallel_for(0, l.C, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c);
  });
}

template <typename scalar_t>
void stats_nchw(const BnLayout& l, typename VecIO<scalar_t>::opmath_t* mean,
                typename VecIO<scalar_t>::opmath_t* var) {
  const scalar_t* x = l.input.const_data_ptr<scalar_t>();
  parallel_channels(l, [&](int64_t c) { channel_stats_nchw(l, x, c, mean + c, var + c); });
}

template <typename scalar_t>
void stats_nhwc(const BnLayout& l, typename VecIO<scalar_t>::opmath_t* mean,
                typename VecIO<scalar_t>::opmath_t* var) {
  using IO = VecIO<scalar_t>;
  using opmath_t = typename IO::opmath_t;
  using V = Vectorized<opmath_t>;
  constexpr int64_t kStep = IO::kStep;
  const scalar_t* x = l.input.const_data_ptr<scalar_t>();
  const int64_t rows = l.rows(), C = l.C;
  const int64_t chunks = row_chunks(rows, C);
  std::vector<opmath_t> part_mean(chunks * C, 0), part_m2(chunks * C, 0);
  std::vector<int64_t> part_count(chunks, 0);
  std::vector<opmath_t> shift(C, 0);  // the first row
  for (int64_t c = 0; rows > 0 && c < C; ++c) shift[c] = static_cast<opmath_t>(x[c]);
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    V v[IO::kParts];
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r_begin = k * rows / chunks, r_end = (k + 1) * rows / chunks;
      opmath_t* pm = part_mean.data() + k * C;
      opmath_t* pm2 = part_m2.data() + k * C;
      int64_t count = 0;
      for (int64_t rb = r_begin; rb < r_end; rb += kRowBlock) {
        const int64_t nr = std::min(kRowBlock, r_end - rb);
        const scalar_t* block = x + rb * C;
        const opmath_t inv_nr = opmath_t(1) / static_cast<opmath_t>(nr);
        int64_t j = 0;
        for (; j < C; j += kStep) {
          const int64_t width = std::min(kStep, C - j);
          V sum[IO::kParts], sq[IO::kParts], sh[IO::kParts];
          for (int p = 0; p < IO::kParts; ++p) {
            sum[p] = sq[p] = V(0);
            sh[p] = load_channels<V>(shift.data(), j + p * V::size(), C);
          }
          for (int64_t r = 0; r < nr; ++r) {
            IO::load(block + r * C + j, v, width);
            for (int p = 0; p < IO::kParts; ++p) sum[p] = sum[p] + (v[p] - sh[p]);
          }
          for (int p = 0; p < IO::kParts; ++p) {
            const V bmean = sum[p] * V(inv_nr);
            for (int64_t r = 0; r < nr; ++r) {
              IO::load(block + r * C + j, v, width);  // from L1: this block was just read
              const V d = (v[p] - sh[p]) - bmean;
              sq[p] = at::vec::fmadd(d, d, sq[p]);
            }
            const int64_t jp = j + p * V::size();
            if (jp >= C) break;
            const int64_t lanes = std::min<int64_t>(V::size(), C - jp);
            V m = V::loadu(pm + jp, lanes), m2 = V::loadu(pm2 + jp, lanes);
            int64_t n = count;
            chan_merge(m, m2, n, bmean, sq[p], nr);
            m.store(pm + jp, lanes);
            m2.store(pm2 + jp, lanes);
          }
        }
        count += nr;
      }
      part_count[k] = count;
    }
  });
  // Fixed-order merge of the per-chunk partials.
  for (int64_t c = 0; c < C; ++c) {
    opmath_t m = 0, m2 = 0;
    int64_t n = 0;
    for (int64_t k = 0; k < chunks; ++k) chan_merge(m, m2, n, part_mean[k * C + c], part_m2[k * C + c], part_count[k]);
    finish_stats(shift[c] + m, m2, n, mean + c, var + c);
  }
}

// Per-channel coefficient arrays of the forward.
template <typename opmath_t>
struct ForwardTables {
  std::vector<opmath_t> mean, scale, shift;
  ForwardTables(int64_t C, const opmath_t* m, const opmath_t* v, const opmath_t* w, const opmath_t* b,
                double eps)
      : mean(C), scale(C), shift(C) {
    for (int64_t c = 0; c < C; ++c) {
      const auto k = bn_forward_coeffs<opmath_t>(m[c], v[c], eps, w ? w + c : nullptr, b ? b + c : nullptr);
      mean[c] = k.mean;
      scale[c] = k.scale;
      shift[c] = k.shift;
    }
  }
};

template <typename opmath_t>
struct BackwardTables {
  std::vector<opmath_t> mean, mean_dy, xmu_coeff, scale;
  BackwardTables(int64_t C, const opmath_t* m, const opmath_t* v, const opmath_t* w, const opmath_t* sdy,
                 const opmath_t* sdxm, int64_t count, double eps)
      : mean(C), mean_dy(C), xmu_coeff(C), scale(C) {
    for (int64_t c = 0; c < C; ++c) {
      const auto k = bn_backward_coeffs<opmath_t>(m[c], v[c], eps, w ? w + c : nullptr, sdy[c], sdxm[c], count);
      mean[c] = k.mean;
      mean_dy[c] = k.mean_dy;
      xmu_coeff[c] = k.xmu_coeff;
      scale[c] = k.scale;
    }
  }
};

// Calls fn(begin_row, end_row) over the rows of a channels-last walk, or fn(begin_plane, end_plane)
// over the N * C planes of S values of the contiguous walk, in one parallel region.
template <typename Fn>
void parallel_rows(int64_t count, int64_t row_len, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_len));
  at::parallel_for(0, count, grain, fn);
}

template <typename scalar_t>
void elemt(const BnLayout& l, scalar_t* y, const ForwardTables<typename VecIO<scalar_t>::opmath_t>& t) {
  using IO = VecIO<scalar_t>;
  using opmath_t = typename IO::opmath_t;
  using V = Vectorized<opmath_t>;
  scalar_t* x = const_cast<scalar_t*>(l.input.const_data_ptr<scalar_t>());
  const int64_t C = l.C, S = l.S;
  if (!l.channels_last) {
    parallel_rows(l.N * C, S, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C;
        const V m(t.mean[c]), s(t.scale[c]), b(t.shift[c]);
        vectorized_map<0b01u, 0b10u>(std::array<scalar_t*, 2>{x + p * S, y + p * S}, S,
                                     [&](V& xv, V& yv) { yv = bn_forward(xv, m, s, b); });
      }
    });
    return;
  }
  parallel_rows(l.rows(), C, [&](int64_t r0, int64_t r1) {
    V v[IO::kParts];
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < C; j += IO::kStep) {
        const int64_t width = std::min(IO::kStep, C - j);
        IO::load(x + r * C + j, v, width);
        for (int p = 0; p < IO::kParts; ++p) {
          const int64_t jp = j + p * V::size();
          v[p] = bn_forward(v[p], load_channels<V>(t.mean.data(), jp, C), load_channels<V>(t.scale.data(), jp, C),
                            load_channels<V>(t.shift.data(), jp, C));
        }
        IO::store(y + r * C + j, v, width);
      }
    }
  });
}

// sum(dy) and sum(dy * (x - mean)) over channel c of an N x C x S walk, accumulated in vector
// registers flushed into doubles every kFlushEvery steps.
template <typename scalar_t>
void channel_backward_reduce_nchw(const BnLayout& l, const scalar_t* dy, const scalar_t* x, int64_t c,
                                  typename VecIO<scalar_t>::opmath_t mean_c,
                                  typename VecIO<scalar_t>::opmath_t* sum_dy,
                                  typename VecIO<scalar_t>::opmath_t* sum_dy_xmu) {
  using IO = VecIO<scalar_t>;
  using opmath_t = typename IO::opmath_t;
  using V = Vectorized<opmath_t>;
  constexpr int64_t kStep = IO::kStep;
  const int64_t N = l.N, C = l.C, S = l.S;
  V vdy[IO::kParts], vx[IO::kParts];
  const V m(mean_c);
  double total_dy = 0, total_dxm = 0;
  V acc_dy(0), acc_dxm(0);
  int64_t pending = 0;
  auto flush = [&] {
    total_dy += hsum(acc_dy);
    total_dxm += hsum(acc_dxm);
    acc_dy = acc_dxm = V(0);
    pending = 0;
  };
  for (int64_t n = 0; n < N; ++n) {
    const scalar_t* pdy = dy + (n * C + c) * S;
    const scalar_t* px = x + (n * C + c) * S;
    int64_t i = 0;
    for (; i + kStep <= S; i += kStep) {
      IO::load(pdy + i, vdy, kStep);
      IO::load(px + i, vx, kStep);
      for (int p = 0; p < IO::kParts; ++p) {
        acc_dy = acc_dy + vdy[p];
        acc_dxm = at::vec::fmadd(vdy[p], vx[p] - m, acc_dxm);
      }
      if (++pending == kFlushEvery) flush();
    }
    if (i < S) {  // the plane's last partial vector: dy loads as 0 in the padding, which adds nothing
      IO::load(pdy + i, vdy, S - i);
      IO::load(px + i, vx, S - i);
      for (int p = 0; p < IO::kParts; ++p) {
        acc_dy = acc_dy + vdy[p];
        acc_dxm = at::vec::fmadd(vdy[p], first_lanes(vx[p] - m, S - i - p * V::size()), acc_dxm);
      }
      if (++pending == kFlushEvery) flush();
    }
  }
  flush();
  *sum_dy = static_cast<opmath_t>(total_dy);
  *sum_dy_xmu = static_cast<opmath_t>(total_dxm);
}

template <typename scalar_t>
void backward_reduce(const BnLayout& l, const scalar_t* dy, const typename VecIO<scalar_t>::opmath_t* mean,
                     typename VecIO<scalar_t>::opmath_t* sum_dy, typename VecIO<scalar_t>::opmath_t* sum_dy_xmu) {
  using IO = VecIO<scalar_t>;
  using opmath_t = typename IO::opmath_t;
  using V = Vectorized<opmath_t>;
  constexpr int64_t kStep = IO::kStep;
  const scalar_t* x = l.input.const_data_ptr<scalar_t>();
  const int64_t C = l.C;
  if (!l.channels_last) {
    parallel_channels(l, [&](int64_t c) {
      channel_backward_reduce_nchw(l, dy, x, c, mean[c], sum_dy + c, sum_dy_xmu + c);
    });
    return;
  }
  const int64_t rows = l.rows();
  const int64_t chunks = row_chunks(rows, C);
  std::vector<double> part_dy(chunks * C, 0), part_dxm(chunks * C, 0);
  // Each block of kRowBlock rows is summed in opmath_t per channel, row after row in memory order (a
  // walk down a column of a block would touch kRowBlock lines of one L1 set per vector when a row is
  // a multiple of 4 KB), then added to the chunk's double partials.
  const int64_t padded = (C + kStep - 1) / kStep * kStep;
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    V vdy[IO::kParts], vx[IO::kParts];
    std::vector<opmath_t> block_dy(padded), block_dxm(padded);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r_begin = k * rows / chunks, r_end = (k + 1) * rows / chunks;
      double* pdy = part_dy.data() + k * C;
      double* pdxm = part_dxm.data() + k * C;
      for (int64_t rb = r_begin; rb < r_end; rb += kRowBlock) {
        const int64_t nr = std::min(kRowBlock, r_end - rb);
        std::fill(block_dy.begin(), block_dy.end(), opmath_t(0));
        std::fill(block_dxm.begin(), block_dxm.end(), opmath_t(0));
        for (int64_t r = rb; r < rb + nr; ++r) {
          for (int64_t j = 0; j < C; j += kStep) {
            const int64_t width = std::min(kStep, C - j);
            IO::load(dy + r * C + j, vdy, width);
            IO::load(x + r * C + j, vx, width);
            for (int p = 0; p < IO::kParts; ++p) {
              const int64_t jp = j + p * V::size();
              const V m = load_channels<V>(mean, jp, C);
              (V::loadu(block_dy.data() + jp) + vdy[p]).store(block_dy.data() + jp);
              at::vec::fmadd(vdy[p], vx[p] - m, V::loadu(block_dxm.data() + jp)).store(block_dxm.data() + jp);
            }
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          pdy[c] += block_dy[c];
          pdxm[c] += block_dxm[c];
        }
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    double a = 0, b = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      a += part_dy[k * C + c];
      b += part_dxm[k * C + c];
    }
    sum_dy[c] = static_cast<opmath_t>(a);
    sum_dy_xmu[c] = static_cast<opmath_t>(b);
  }
}

template <typename scalar_t>
void backward_elemt(const BnLayout& l, const scalar_t* dy, scalar_t* gi,
                    const BackwardTables<typename VecIO<scalar_t>::opmath_t>& t) {
  using IO = VecIO<scalar_t>;
  using opmath_t = typename IO::opmath_t;
  using V = Vectorized<opmath_t>;
  scalar_t* x = const_cast<scalar_t*>(l.input.const_data_ptr<scalar_t>());
  scalar_t* g = const_cast<scalar_t*>(dy);
  const int64_t C = l.C, S = l.S;
  if (!l.channels_last) {
    parallel_rows(l.N * C, S, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C;
        const V m(t.mean[c]), mdy(t.mean_dy[c]), k(t.xmu_coeff[c]), s(t.scale[c]);
        vectorized_map<0b011u, 0b100u>(std::array<scalar_t*, 3>{g + p * S, x + p * S, gi + p * S}, S,
                                       [&](V& dyv, V& xv, V& out) { out = bn_backward(dyv, xv, m, mdy, k, s); });
      }
    });
    return;
  }
  parallel_rows(l.rows(), C, [&](int64_t r0, int64_t r1) {
    V vdy[IO::kParts], vx[IO::kParts];
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < C; j += IO::kStep) {
        const int64_t width = std::min(IO::kStep, C - j);
        IO::load(g + r * C + j, vdy, width);
        IO::load(x + r * C + j, vx, width);
        for (int p = 0; p < IO::kParts; ++p) {
          const int64_t jp = j + p * V::size();
          vx[p] = bn_backward(vdy[p], vx[p], load_channels<V>(t.mean.data(), jp, C),
                              load_channels<V>(t.mean_dy.data(), jp, C), load_channels<V>(t.xmu_coeff.data(), jp, C),
                              load_channels<V>(t.scale.data(), jp, C));
        }
        IO::store(gi + r * C + j, vx, width);
      }
    }
  });
}

// The one-process training passes of an N x C x S input, channel by channel: a channel's reduction,
// then its elementwise pass while the channel is still in this core's cache (a channel of a ResNet-50
// layer at batch 64 is 0.2-0.8 MB of float32, per input), so memory is read about once instead of
// twice. The elementwise pass walks the channel's planes last-read first, since the cache keeps the
// most recent ones. Same arithmetic, per channel, as the split kernels (results are bit-identical).
// Channels are the only parallel dimension here, so inputs with few channels take the split kernels.
inline bool fuse_by_channel(const BnLayout& l) {
  return !l.channels_last && l.count() > 0 && l.C >= 4 * static_cast<int64_t>(at::get_num_threads());
}

template <typename scalar_t>
void train_forward_nchw(const BnLayout& l, scalar_t* y, typename VecIO<scalar_t>::opmath_t* mean,
                        typename VecIO<scalar_t>::opmath_t* var, const typename VecIO<scalar_t>::opmath_t* w,
                        const typename VecIO<scalar_t>::opmath_t* b, double eps) {
  using opmath_t = typename VecIO<scalar_t>::opmath_t;
  using V = Vectorized<opmath_t>;
  scalar_t* x = const_cast<scalar_t*>(l.input.const_data_ptr<scalar_t>());
  const int64_t N = l.N, C = l.C, S = l.S;
  parallel_channels(l, [&](int64_t c) {
    channel_stats_nchw(l, x, c, mean + c, var + c);
    const auto k = bn_forward_coeffs<opmath_t>(mean[c], var[c], eps, w ? w + c : nullptr, b ? b + c : nullptr);
    const V m(k.mean), sc(k.scale), sh(k.shift);
    for (int64_t n = N - 1; n >= 0; --n) {
      const int64_t p = n * C + c;
      vectorized_map<0b01u, 0b10u>(std::array<scalar_t*, 2>{x + p * S, y + p * S}, S,
                                   [&](V& xv, V& yv) { yv = bn_forward(xv, m, sc, sh); });
    }
  });
}

template <typename scalar_t>
void train_backward_nchw(const BnLayout& l, const scalar_t* dy, scalar_t* gi,
                         const typename VecIO<scalar_t>::opmath_t* mean,
                         const typename VecIO<scalar_t>::opmath_t* var, const typename VecIO<scalar_t>::opmath_t* w,
                         typename VecIO<scalar_t>::opmath_t* sum_dy, typename VecIO<scalar_t>::opmath_t* sum_dy_xmu,
                         double eps) {
  using opmath_t = typename VecIO<scalar_t>::opmath_t;
  using V = Vectorized<opmath_t>;
  scalar_t* x = const_cast<scalar_t*>(l.input.const_data_ptr<scalar_t>());
  scalar_t* g = const_cast<scalar_t*>(dy);
  const int64_t N = l.N, C = l.C, S = l.S;
  parallel_channels(l, [&](int64_t c) {
    channel_backward_reduce_nchw(l, dy, x, c, mean[c], sum_dy + c, sum_dy_xmu + c);
    const auto k = bn_backward_coeffs<opmath_t>(mean[c], var[c], eps, w ? w + c : nullptr, sum_dy[c],
                                                sum_dy_xmu[c], l.count());
    const V m(k.mean), mdy(k.mean_dy), kx(k.xmu_coeff), sc(k.scale);
    for (int64_t n = N - 1; n >= 0; --n) {
      const int64_t p = n * C + c;
      vectorized_map<0b011u, 0b100u>(std::array<scalar_t*, 3>{g + p * S, x + p * S, gi + p * S}, S,
                                     [&](V& dyv, V& xv, V& out) { out = bn_backward(dyv, xv, m, mdy, kx, sc); });
    }
  });
}

template <typename T>
const T* opt_ptr(const at::Tensor* t) {
  return t ? t->const_data_ptr<T>() : nullptr;
}

}  // namespace

void batch_norm_stats_kernel(const BnLayout& l, at::Tensor& mean, at::Tensor& var) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.input.scalar_type(), "fusedopt.batch_norm_stats", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    if (l.channels_last) {
      stats_nhwc<scalar_t>(l, mean.data_ptr<opmath_t>(), var.data_ptr<opmath_t>());
    } else {
      stats_nchw<scalar_t>(l, mean.data_ptr<opmath_t>(), var.data_ptr<opmath_t>());
    }
  });
}

void batch_norm_elemt_kernel(const BnLayout& l, at::Tensor& out, const at::Tensor& mean, const at::Tensor& var,
                             const at::Tensor* weight, const at::Tensor* bias, double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.input.scalar_type(), "fusedopt.batch_norm_elemt", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    const ForwardTables<opmath_t> tables(l.C, mean.const_data_ptr<opmath_t>(), var.const_data_ptr<opmath_t>(),
                                         opt_ptr<opmath_t>(weight), opt_ptr<opmath_t>(bias), eps);
    elemt<scalar_t>(l, out.data_ptr<scalar_t>(), tables);
  });
}

void batch_norm_backward_reduce_kernel(const BnLayout& l, const at::Tensor& grad_out, const at::Tensor& mean,
                                       at::Tensor& sum_dy, at::Tensor& sum_dy_xmu) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.input.scalar_type(), "fusedopt.batch_norm_backward_reduce", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    backward_reduce<scalar_t>(l, grad_out.const_data_ptr<scalar_t>(), mean.const_data_ptr<opmath_t>(),
                              sum_dy.data_ptr<opmath_t>(), sum_dy_xmu.data_ptr<opmath_t>());
  });
}

void batch_norm_backward_elemt_kernel(const BnLayout& l, const at::Tensor& grad_out, at::Tensor& grad_in,
                                      const at::Tensor& mean, const at::Tensor& var, const at::Tensor* weight,
                                      const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu, int64_t count,
                                      double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.input.scalar_type(), "fusedopt.batch_norm_backward_elemt", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    const BackwardTables<opmath_t> tables(l.C, mean.const_data_ptr<opmath_t>(), var.const_data_ptr<opmath_t>(),
                                          opt_ptr<opmath_t>(weight), sum_dy.const_data_ptr<opmath_t>(),
                                          sum_dy_xmu.const_data_ptr<opmath_t>(), count, eps);
    backward_elemt<scalar_t>(l, grad_out.const_data_ptr<scalar_t>(), grad_in.data_ptr<scalar_t>(), tables);
  });
}

void batch_norm_train_kernel(const BnLayout& l, at::Tensor& out, at::Tensor& mean, at::Tensor& var,
                             const at::Tensor* weight, const at::Tensor* bias, double eps) {
  if (!fuse_by_channel(l)) {
    batch_norm_stats_kernel(l, mean, var);
    batch_norm_elemt_kernel(l, out, mean, var, weight, bias, eps);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.input.scalar_type(), "fusedopt.batch_norm_train", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    train_forward_nchw<scalar_t>(l, out.data_ptr<scalar_t>(), mean.data_ptr<opmath_t>(), var.data_ptr<opmath_t>(),
                                 opt_ptr<opmath_t>(weight), opt_ptr<opmath_t>(bias), eps);
  });
}

void batch_norm_train_backward_kernel(const BnLayout& l, const at::Tensor& grad_out, at::Tensor& grad_in,
                                      const at::Tensor& mean, const at::Tensor& var, const at::Tensor* weight,
                                      at::Tensor& sum_dy, at::Tensor& sum_dy_xmu, double eps) {
  if (!fuse_by_channel(l)) {
    batch_norm_backward_reduce_kernel(l, grad_out, mean, sum_dy, sum_dy_xmu);
    batch_norm_backward_elemt_kernel(l, grad_out, grad_in, mean, var, weight, sum_dy, sum_dy_xmu, l.count(), eps);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.input.scalar_type(), "fusedopt.batch_norm_train_backward", [&] {
    using opmath_t = typename VecIO<scalar_t>::opmath_t;
    train_backward_nchw<scalar_t>(l, grad_out.const_data_ptr<scalar_t>(), grad_in.data_ptr<scalar_t>(),
                                  mean.const_data_ptr<opmath_t>(), var.const_data_ptr<opmath_t>(),
                                  opt_ptr<opmath_t>(weight), sum_dy.data_ptr<opmath_t>(),
                                  sum_dy_xmu.data_ptr<opmath_t>(), eps);
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
