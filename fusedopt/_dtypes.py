"""The dtypes every fused kernel takes (``is_supported_dtype`` in csrc/common/tensor_lists.cpp)."""

import torch

KERNEL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
