#include "cpu/dispatch.h"

#include <ATen/Version.h>

namespace fusedopt::cpu {

Capability active_capability() {
  static const Capability chosen = [] {
    const std::string torch_choice = at::get_cpu_capability();
    Capability c = Capability::DEFAULT;
    if (torch_choice == "AVX512") c = Capability::AVX512;
    else if (torch_choice == "AVX2") c = Capability::AVX2;
#ifndef FUSEDOPT_CPU_HAVE_AVX512
    if (c == Capability::AVX512) c = Capability::AVX2;
#endif
#ifndef FUSEDOPT_CPU_HAVE_AVX2
    if (c == Capability::AVX2) c = Capability::DEFAULT;
#endif
    return c;
  }();
  return chosen;
}

const char* capability_name(Capability c) {
  switch (c) {
    case Capability::AVX512: return "AVX512";
    case Capability::AVX2: return "AVX2";
    default: return "DEFAULT";
  }
}

}  // namespace fusedopt::cpu
