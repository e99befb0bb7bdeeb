import os
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the project's shared data (DESIGN.md, tier1/, fixtures/) sits beside the repository
SHARED = os.environ.get("NANOOCR_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
FIXTURE_D2 = os.path.join(SHARED, "fixtures", "nanochat_d2")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_base_dir(tmp_path, monkeypatch):
    """Tests never touch the user's ~/.cache/nanoocr."""
    monkeypatch.setenv("NANOOCR_BASE_DIR", str(tmp_path / "base"))
