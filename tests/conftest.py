"""Suite-wide switches, set before any kvlab module (or any ``@triton.jit`` module) is imported.

- Triton kernels run in the interpreter on machines without CUDA (TRITON_INTERPRET must be set before
  a module with ``@triton.jit`` is imported).
- The engine checks every allocator's invariants after each step (``KVLAB_CHECK_INVARIANTS``).
- Under pytest-xdist each worker process uses one torch thread, so N workers on N cores do not
  oversubscribe them (servers and other subprocesses the tests start keep their own settings).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("KVLAB_CHECK_INVARIANTS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
