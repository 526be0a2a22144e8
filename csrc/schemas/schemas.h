// Each op family defines its schemas in csrc/schemas/<family>.cpp; registration.cpp calls them all from
// its one TORCH_LIBRARY block. Conventions for every schema are in csrc/registration.cpp.
#pragma once

#include <torch/library.h>

namespace fusedopt::schemas {

void define_optimizer_ops(torch::Library& m);
void define_adam_ops(torch::Library& m);
void define_rmsprop_adagrad_ops(torch::Library& m);
void define_clipping_ops(torch::Library& m);
void define_batch_norm_ops(torch::Library& m);
void define_dropout_ops(torch::Library& m);

}  // namespace fusedopt::schemas
