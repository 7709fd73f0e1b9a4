"""kvlab.kernels: attention and cache kernels, one op per file, each with a torch reference.

Triton kernels run on a CUDA GPU; on a CPU they run only under ``TRITON_INTERPRET=1`` (tests use
tiny shapes). The torch reference beside each kernel is what CPU execution uses.
"""
