"""nanoocr: `from nanoocr import read` (or Reader) reads images and documents (nanoocr/api.py).
The API is imported on first use, so `import nanoocr.synth` and the like stay light."""

__all__ = ["read", "Reader", "Page", "Line"]


def __getattr__(name):
    if name in __all__:
        from nanoocr import api
        return getattr(api, name)
    raise AttributeError(f"module 'nanoocr' has no attribute {name!r}")
