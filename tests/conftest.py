import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a tiny checkpoint + tokenizer written by nanochat's own code: the ground truth for the GPT and
# tokenizer (tests/fixtures/nanochat_d2/README.md)
FIXTURE_D2 = os.path.join(REPO, "tests", "fixtures", "nanochat_d2")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_base_dir(tmp_path, monkeypatch):
    """Tests never touch the user's ~/.cache/nanoocr."""
    monkeypatch.setenv("NANOOCR_BASE_DIR", str(tmp_path / "base"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models decode faster on one thread, and the suite shares 2 cores; scripts run in
    subprocesses honour OMP_NUM_THREADS. Use with pytestmark = pytest.mark.usefixtures("one_thread")."""
    n, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(n)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env
