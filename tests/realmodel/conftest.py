"""Engine-level real-model tests reuse the model tests' session fixtures (one load per session)."""

from tests.models.conftest import executor, hf_model, smol_cfg, smol_dir  # noqa: F401
