"""Real-model fixtures (SmolLM2 loaded once per session) shared with tests/models."""

from tests.models.conftest import executor, hf_model, smol_cfg, smol_dir  # noqa: F401
