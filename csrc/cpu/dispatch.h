// Run-time choice among the CPU kernel variants compiled by setup.py (DEFAULT, AVX2, AVX512).
//
// Each file in csrc/cpu/kernels is compiled once per variant with that variant's -m flags and
// CPU_CAPABILITY=<VARIANT>, so its functions land in namespace fusedopt::cpu::<VARIANT>. Entry points
// call FUSEDOPT_CPU_KERNEL(name) to get the fastest variant the running CPU supports, as chosen by
// torch (at::get_cpu_capability(), which honours ATEN_CPU_CAPABILITY).
#pragma once

#include <string>

namespace fusedopt::cpu {

enum class Capability { DEFAULT = 0, AVX2 = 1, AVX512 = 2 };

// The variant used by this process: torch's choice, capped by what was compiled.
Capability active_capability();
const char* capability_name(Capability c);

// Keeps nullptr (a variant not compiled) from taking part in deducing Fn.
template <typename T>
struct NonDeduced {
  using type = T;
};

template <typename Fn>
Fn* select_variant(Fn* default_fn, typename NonDeduced<Fn*>::type avx2_fn,
                   typename NonDeduced<Fn*>::type avx512_fn) {
  switch (active_capability()) {
    case Capability::AVX512:
      if (avx512_fn) return avx512_fn;
      [[fallthrough]];
    case Capability::AVX2:
      if (avx2_fn) return avx2_fn;
      [[fallthrough]];
    default:
      return default_fn;
  }
}

}  // namespace fusedopt::cpu

#ifdef FUSEDOPT_CPU_HAVE_AVX2
#define FUSEDOPT_CPU_IF_AVX2(...) __VA_ARGS__
#define FUSEDOPT_CPU_AVX2_PTR(name) &::fusedopt::cpu::AVX2::name
#else
#define FUSEDOPT_CPU_IF_AVX2(...)
#define FUSEDOPT_CPU_AVX2_PTR(name) nullptr
#endif
#ifdef FUSEDOPT_CPU_HAVE_AVX512
#define FUSEDOPT_CPU_IF_AVX512(...) __VA_ARGS__
#define FUSEDOPT_CPU_AVX512_PTR(name) &::fusedopt::cpu::AVX512::name
#else
#define FUSEDOPT_CPU_IF_AVX512(...)
#define FUSEDOPT_CPU_AVX512_PTR(name) nullptr
#endif

// Declares `decl` (a function declaration) in every compiled variant's namespace.
#define FUSEDOPT_DECLARE_CPU_KERNEL(decl)                        \
  namespace fusedopt::cpu {                                      \
  namespace DEFAULT {                                            \
  decl;                                                          \
  }                                                              \
  FUSEDOPT_CPU_IF_AVX2(namespace AVX2 { decl; })                 \
  FUSEDOPT_CPU_IF_AVX512(namespace AVX512 { decl; })             \
  }

// Pointer to the chosen variant of a kernel declared with FUSEDOPT_DECLARE_CPU_KERNEL.
#define FUSEDOPT_CPU_KERNEL(name)                                                   \
  ::fusedopt::cpu::select_variant(&::fusedopt::cpu::DEFAULT::name,                  \
                                  FUSEDOPT_CPU_AVX2_PTR(name), FUSEDOPT_CPU_AVX512_PTR(name))
