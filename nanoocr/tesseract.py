"""
Tesseract, the off-the-shelf reader `nanoocr eval --tesseract=True` and `nanoocr bench` compare the
model with. Here, below every script, because both of them (and the realistic sets' tests) call it
and a script never imports another script. The `tesseract` program is a system package
(apt-get install tesseract-ocr tesseract-ocr-eng), not a Python dependency.
"""

import os
import shutil
import subprocess
import tempfile
import time


def tesseract_available():
    return shutil.which("tesseract") is not None


def run_tesseract(image, lang="eng", psm=3):
    """Tesseract 5 on a PIL image -> (text, seconds). The same decoded RGB image the model sees
    (EXIF-rotated, alpha flattened) is written as a lossless PNG; only the tesseract process is timed
    (its start-up included: that is what reading one image with it costs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.png")
        image.save(path)
        t0 = time.time()
        proc = subprocess.run(["tesseract", path, "stdout", "-l", lang, "--psm", str(psm)],
                              capture_output=True, text=True, timeout=300)
        seconds = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    # tesseract ends a page with a newline and a form feed; neither is text
    return proc.stdout.rstrip("\n\f \t"), seconds
