// Adam/AdamW on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
#include <vector>

#include "cpu/kernels/adam_kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {
namespace {

// Master-weight path for n elements from `begin` of one tensor: params and grads are half_t, the
// float32 master and states are updated in float32 and the param gets the master's rounded value.
template <bool kUnscale, bool kStoreGrads, typename half_t>
void adam_master_segment(const std::array<void*, 7>& ptrs, int64_t begin, int64_t n,
                         const AdamHyper& h, const AdamScalars<float>& s,
                         const GradFactors<double>& grad_factors) {
  using V = Vectorized<float>;
  using H = Vectorized<half_t>;
  constexpr int64_t kV = V::size();
  constexpr int64_t kH = H::size();
  static_assert(kH == 2 * kV, "a half register widens into two float registers");
  half_t* param = static_cast<half_t*>(ptrs[0]) + begin;
  half_t* grad = static_cast<half_t*>(ptrs[1]) + begin;
  float* exp_avg = static_cast<float*>(ptrs[2]) + begin;
  float* exp_avg_sq = static_cast<float*>(ptrs[3]) + begin;
  float* max_sq = h.amsgrad ? static_cast<float*>(ptrs[4]) + begin : nullptr;
  float* master = static_cast<float*>(ptrs[kAdamMasterList]) + begin;
  const auto factors = splat_grad_factors<V>(grad_factors);
  V g[2], w[2], m[2], v[2], mx[2] = {V(0), V(0)};
  for (int64_t i = 0; i < n; i += kH) {
    const int64_t len = std::min(kH, n - i);
    const int64_t len0 = std::min(kV, len), len1 = len - len0;
    auto load = [&](const float* p, V(&out)[2]) {
      out[0] = len0 == kV ? V::loadu(p + i) : V::loadu(p + i, len0);
      out[1] = len1 == kV ? V::loadu(p + i + kV) : len1 > 0 ? V::loadu(p + i + kV, len1) : V(0);
    };
    auto store = [&](float* p, const V(&in)[2]) {
      len0 == kV ? in[0].store(p + i) : in[0].store(p + i, len0);
      if (len1 == kV) in[1].store(p + i + kV);
      else if (len1 > 0) in[1].store(p + i + kV, len1);
    };
    auto store_half = [&](half_t* p, const V(&in)[2]) {
      const H out = at::vec::convert_from_float<half_t>(in[0], in[1]);
      len == kH ? out.store(p + i) : out.store(p + i, len);
    };
    std::tie(g[0], g[1]) = at::vec::convert_to_float<half_t>(len == kH ? H::loadu(grad + i) : H::loadu(grad + i, len));
    load(master, w);
    load(exp_avg, m);
    load(exp_avg_sq, v);
    if (max_sq) load(max_sq, mx);
    for (int part = 0; part < 2; ++part) adam_step(w[part], g[part], m[part], v[part], mx[part], h, s, kUnscale, factors);
    store(master, w);
    store(exp_avg, m);
    store(exp_avg_sq, v);
    if (max_sq) store(max_sq, mx);
    store_half(param, w);
    if (kStoreGrads) store_half(grad, g);
  }
}

}  // namespace

struct CachedBiasCorrections {
  bool valid = false;
  double step = 0;
  AdamBiasCorrections corrections{};
};

void adam_kernel(const TensorListsView<7>& lists, const AdamCpuArgs& args) {
  const AdamHyper& h = args.hyper;
  // The masks (which lists are read and written) become template arguments.
  with_constant(h.amsgrad, [&](auto amsgrad) {
    with_grad_scaling(args.unscale_grads, args.write_grads, [&](auto unscale, auto store) {
      constexpr unsigned kRead = adam_read_mask(amsgrad);
      constexpr unsigned kWrite = adam_write_mask(amsgrad, store);
      // Per thread, the bias corrections of the last step count seen: params mostly share one count,
      // and two pow() per tensor were ~2% of a step over 20,000 small tensors.
      std::vector<CachedBiasCorrections> cached(static_cast<size_t>(at::get_num_threads()));
      for_each_segment_parallel(lists, [&](size_t i, int64_t begin, int64_t end) {
        const auto& ptrs = lists.ptrs[i];
        // This tensor's step count (already incremented by the entry point).
        const double step = *static_cast<const float*>(ptrs[kAdamStepList]);
        CachedBiasCorrections& c = cached[static_cast<size_t>(at::get_thread_num())];
        if (!c.valid || c.step != step) c = {true, step, adam_bias_corrections(h, step)};
        const AdamBiasCorrections& bc = c.corrections;
        if (args.has_master) {
          const auto s = adam_scalars<float>(h, args.lr, bc);
          if (lists.dtype[i] == at::kHalf) {
            adam_master_segment<decltype(unscale)::value, decltype(store)::value, at::Half>(ptrs, begin, end - begin, h, s, args.grad_factors);
          } else {
            adam_master_segment<decltype(unscale)::value, decltype(store)::value, at::BFloat16>(ptrs, begin, end - begin, h, s, args.grad_factors);
          }
          return;
        }
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lists.dtype[i], "fusedopt.adam_", [&] {
          using opmath_t = typename VecIO<scalar_t>::opmath_t;
          using V = Vectorized<opmath_t>;
          const auto s = adam_scalars<opmath_t>(h, args.lr, bc);
          const auto factors = splat_grad_factors<V>(args.grad_factors);
          std::array<scalar_t*, 5> arrays;
          for (int k = 0; k < 5; ++k) {
            arrays[k] = ptrs[k] ? static_cast<scalar_t*>(ptrs[k]) + begin : nullptr;
          }
          vectorized_map<kRead, kWrite>(arrays, end - begin,
                                        [&](V& param, V& grad, V& exp_avg, V& exp_avg_sq, V& max_sq) {
                                          adam_step(param, grad, exp_avg, exp_avg_sq, max_sq, h, s,
                                                    unscale, factors);
                                        },
                                        next_arrays(lists, i));
        });
      });
    });
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
