"""Root test configuration: run Triton kernels in the interpreter on machines without CUDA.

TRITON_INTERPRET must be set before any module with ``@triton.jit`` is imported, so it is set here.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
