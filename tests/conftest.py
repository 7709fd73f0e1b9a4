"""Suite-wide switches: set before any kvlab module is imported."""

import os

os.environ.setdefault("KVLAB_CHECK_INVARIANTS", "1")  # the engine checks the allocator after every step
