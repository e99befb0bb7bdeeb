"""
Image front door: every awkward input a user can hand us gives either the right RGB pixels or an
ImageError naming the file; every mode gives tensors of the right shape, range and layout.
Every input is built here in tmp_path (nothing downloaded, nothing checked in).
"""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from nanoocr.deepencoder import ENCODER_SIZES, DeepEncoderConfig
from nanoocr.image_process import (
    DEFAULT_MAX_PIXELS,
    PAD_COLOR,
    ImageError,
    _open_lazy,
    load_image,
    process_image,
    sniff_image_type,
)
from nanoocr.modes import (
    MODES,
    check_mode,
    default_mode,
    gundam_grid,
    mode_side,
    parse_mode,
    resolve_mode,
)

GREY = (127 / 255 - 0.5) / 0.5  # the pad colour after normalisation, about -0.0039


def px(im, x, y):
    return im.getpixel((x, y))


def stored(path):
    """(mode, info) of a file as Pillow opens it, closing the file again."""
    with Image.open(path) as im:
        return im.mode, dict(im.info)


def close(a, b, tol):
    return all(abs(int(u) - int(v)) <= tol for u, v in zip(a, b))


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width, height):
    """A ~100-byte PNG whose header claims width x height RGB pixels (its data is junk)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# -----------------------------------------------------------------------------
# PIL modes -> RGB

def test_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    path = tmp_path / "scan16.png"
    Image.fromarray(np.tile(ramp, (4, 1))).save(path)
    assert stored(path)[0] in ("I;16", "I")  # really a 16-bit file (mode name varies by Pillow)
    row = np.asarray(load_image(path))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1, "16-bit mid-grey must map to 8-bit mid-grey"
    assert (np.diff(row) >= 0).all() and (row == 255).sum() == 1  # a clip would saturate most of it


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # no ink = white
    im.paste((255, 0, 0, 0), (0, 0, 16, 16))         # full cyan ink on the left half
    path = tmp_path / "print.jpg"
    im.save(path, quality=95)
    assert stored(path)[0] == "CMYK"
    out = load_image(path)
    assert out.mode == "RGB"
    assert close(px(out, 4, 8), (0, 255, 255), 8) and close(px(out, 28, 8), (255, 255, 255), 8)


def test_palette_transparency_becomes_white(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # index 0 black (hidden), 1 blue
    im.paste(1, (2, 0, 4, 4))
    path = tmp_path / "logo.png"
    im.save(path, transparency=0)
    mode, info = stored(path)
    assert mode == "P" and "transparency" in info
    out = load_image(path)
    assert px(out, 0, 0) == (255, 255, 255), "transparent pixels must be composited on white"
    assert px(out, 3, 3) == (0, 0, 255)


def test_rgba_and_la_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    rgba.save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert px(out, 0, 0) == (255, 255, 255) and px(out, 1, 0) == (255, 0, 0)
    assert close(px(out, 2, 0), (127, 127, 127), 1)  # half-transparent black over white
    la = Image.new("LA", (3, 1))
    la.putdata([(0, 0), (0, 255), (0, 128)])
    la.save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert px(out, 0, 0) == (255, 255, 255) and px(out, 1, 0) == (0, 0, 0)
    assert close(px(out, 2, 0), (127, 127, 127), 1)


def test_one_bit(tmp_path):
    im = Image.new("1", (8, 8), 0)
    im.paste(1, (0, 0, 4, 8))
    im.save(tmp_path / "fax.png")
    out = np.asarray(load_image(tmp_path / "fax.png"))
    assert set(np.unique(out)) == {0, 255}
    assert (out[:, :4] == 255).all() and (out[:, 4:] == 0).all()


def test_float_and_int32_scaled_by_actual_range(tmp_path):
    f = np.tile(np.linspace(-3.0, 5.0, 9, dtype=np.float32), (2, 1))
    Image.fromarray(f, "F").save(tmp_path / "sci.tif")
    assert stored(tmp_path / "sci.tif")[0] == "F"
    row = np.asarray(load_image(tmp_path / "sci.tif"))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and abs(int(row[4]) - 128) <= 1
    i32 = Image.fromarray(np.array([[0, 500_000, 1_000_000]], dtype=np.int32), "I")
    row = np.asarray(load_image(i32))[0, :, 0]
    assert row[0] == 0 and abs(int(row[1]) - 128) <= 1 and row[2] == 255


def test_exif_rotation_applied(tmp_path):
    im = Image.new("RGB", (60, 30), (255, 255, 255))
    im.paste((255, 0, 0), (0, 0, 20, 12))  # red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: display rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (30, 60), "width and height must swap"
    assert close(px(out, 25, 5), (255, 0, 0), 30), "top-left must rotate to the top-right corner"
    assert close(px(out, 4, 5), (255, 255, 255), 30) and close(px(out, 25, 55), (255, 255, 255), 30)


# -----------------------------------------------------------------------------
# Bad files -> ImageError naming the file

def test_bomb_rejected_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(100_000, 100_000))
    with pytest.raises(ImageError) as e:
        load_image(path)
    msg = str(e.value)
    assert "bomb.png" in msg and "10,000,000,000" in msg and f"{DEFAULT_MAX_PIXELS:,}" in msg
    assert "max_pixels" in msg  # says how to raise it
    # a real image over a caller-chosen limit
    noise(100, 100).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"big\.png.*10,000 pixels exceeds the limit of 5,000"):
        load_image(tmp_path / "big.png", max_pixels=5000)
    assert load_image(tmp_path / "big.png", max_pixels=10_000).size == (100, 100)


def test_pillow_bomb_check_does_not_hide_the_size():
    # Pillow itself refuses this header inside Image.open; we still get the size, and its limit is restored
    saved = Image.MAX_IMAGE_PIXELS
    im = _open_lazy(io.BytesIO(bomb_png(100_000, 100_000)))
    assert im.size == (100_000, 100_000) and Image.MAX_IMAGE_PIXELS == saved


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    buf = io.BytesIO()
    noise(200, 200).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(ImageError, match=rf"cut\.{fmt.lower()}.*truncated"):
        load_image(path)


@pytest.mark.parametrize("content,what", [
    (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", "PDF"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "SVG"),
    (b"", "empty"),
    (bytes(range(256)) * 4, "not in any image format"),
])
def test_non_images(tmp_path, content, what):
    path = tmp_path / "scan.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=rf"scan\.png.*{what}"):
        load_image(path)
    with pytest.raises(ImageError, match=rf"upload-7.*{what}"):  # bytes: the caller's name is used
        load_image(content, name="upload-7")


def test_missing_file_and_truncated_flag(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match=r"nothere\.png"):
        load_image(tmp_path / "nothere.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(noise(4, 4))


def test_sources_agree(tmp_path):
    im = noise(17, 9)
    path = tmp_path / "x.png"
    im.save(path)
    ref = np.asarray(im)
    for src in (path, str(path), path.read_bytes(), im):
        assert (np.asarray(load_image(src)) == ref).all()
    with open(path, "rb") as f:  # a file object
        assert (np.asarray(load_image(f)) == ref).all()


# -----------------------------------------------------------------------------
# Modes, tiles, normalisation

@pytest.mark.parametrize("size", [(1, 1), (20000, 10), (10, 20000)])
def test_extreme_sizes_every_mode(size):
    im = Image.new("RGB", size, (0, 0, 0))
    for mode in MODES:
        out = process_image(im, mode)
        s = mode_side(mode, 1024, 16)
        assert out["global_view"].shape == (3, s, s) and torch.isfinite(out["global_view"]).all()
        assert (out["global_view"] == -1).any(), f"{mode}: the image must survive as >= 1 pixel"
    g = process_image(im, "gundam")
    if size == (1, 1):
        assert g["grid"] is None and g["tiles"] is None
    else:
        assert g["grid"] == ((9, 1) if size[0] > size[1] else (1, 9)) and g["tiles"].shape == (9, 3, 640, 640)


def test_mode_helpers():
    assert parse_mode("base") == "base"
    assert parse_mode("32x256") == (32, 256)
    assert parse_mode([32, 256]) == (32, 256)
    assert default_mode({"user_config": {"mode": [32, 128]}}) == (32, 128)
    assert default_mode({}) == "base"
    with pytest.raises(ValueError, match="unknown mode"):
        parse_mode("huge")
    cfg = DeepEncoderConfig(**ENCODER_SIZES["cpu"])
    with pytest.raises(ValueError, match="stride"):
        check_mode(cfg, (30, 64))
    # what read / eval / sample / serve read with: the asked-for mode, else the training mode
    meta = {"user_config": {"mode": [32, 128]}}
    assert resolve_mode(cfg, meta) == (32, 128) and resolve_mode(cfg, meta, "tiny") == "tiny"
    with pytest.raises(ValueError, match="stride"):
        resolve_mode(cfg, meta, "30x64")


def test_sniff_image_type_names_formats_by_their_bytes():
    assert sniff_image_type(b"\x89PNG\r\n\x1a\n" + b"rest") == "png"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_image_type(b"%PDF-1.7") is None and sniff_image_type(b"") is None


def test_gundam_grid_rule():
    assert gundam_grid(2000, 1000) == (4, 2)  # dev/design.md §2's example: (2,1) ties on aspect, larger area wins
    assert gundam_grid(1300, 650) == (2, 1)   # same tie, area 845k <= 0.5*640^2*8: the larger grid must not win
    assert gundam_grid(1400, 1400) == (3, 3)  # square tie (2,2)/(3,3): area 1.96M > 1.84M
    assert gundam_grid(1000, 1000) == (2, 2)  # area 1M: stays (2,2)
    assert gundam_grid(640, 640) is None and gundam_grid(641, 100) is not None
    assert gundam_grid(350, 350, tile=160) == (3, 3)  # the rule scales with the tile side


def test_gundam_tiles_row_major():
    im = Image.new("RGB", (2000, 1000), (255, 255, 255))
    im.paste((255, 0, 0), (0, 0, 1000, 500))     # top-left red
    im.paste((0, 255, 0), (1000, 0, 2000, 500))  # top-right green
    im.paste((0, 0, 255), (0, 500, 1000, 1000))  # bottom-left blue; bottom-right stays white
    out = process_image(im, "gundam")
    wc, hc = out["grid"]
    assert (wc, hc) == (4, 2) and out["tiles"].shape == (wc * hc, 3, 640, 640)
    expect = [(1, -1, -1)] * 2 + [(-1, 1, -1)] * 2 + [(-1, -1, 1)] * 2 + [(1, 1, 1)] * 2
    for k, rgb in enumerate(expect):
        assert out["tiles"][k, :, 320, 320].tolist() == list(rgb), f"tile {k}"
    assert out["global_view"].shape == (3, 1024, 1024) and out["valid_ratio"] == 0.5
    # scaled preset: tiles and views shrink with image_size
    small = process_image(im, "gundam", image_size=256, multiple=16)
    assert small["tiles"].shape == (8, 3, 160, 160) and small["global_view"].shape == (3, 256, 256)


def test_pad_and_resize_modes():
    im = Image.new("RGB", (2000, 1000), (255, 255, 255))
    base = process_image(im, "base")["global_view"]
    assert base.shape == (3, 1024, 1024)
    assert torch.allclose(base[:, :250], torch.full_like(base[:, :250], GREY))   # grey band above
    assert torch.allclose(base[:, -250:], torch.full_like(base[:, -250:], GREY))  # and below
    assert (base[:, 260:760] == 1).all()  # the white page itself, aspect kept (2:1 -> 1024x512)
    assert abs(GREY + 0.0039) < 1e-4 and PAD_COLOR == (127, 127, 127)
    tiny = process_image(im, "tiny")["global_view"]
    assert tiny.shape == (3, 512, 512) and (tiny == 1).all()  # stretched, no padding
    sides = {m: process_image(im, m, image_size=256, multiple=16)["global_view"].shape[-1] for m in MODES}
    assert sides == {"tiny": 128, "small": 160, "base": 256, "large": 320, "gundam": 256}


def test_normalisation_range():
    assert (process_image(Image.new("RGB", (64, 64)), "small")["global_view"] == -1).all()
    out = process_image(noise(300, 200), "large")
    v = out["global_view"]
    assert v.dtype == torch.float32 and v.min() >= -1 and v.max() <= 1
    assert v.min() < -0.95 and v.max() > 0.95
    assert torch.equal(v, process_image(noise(300, 200), "large")["global_view"])  # deterministic


def test_fixed_size_strip():
    strip = Image.new("RGB", (300, 20), (0, 0, 0))
    out = process_image(strip, (32, 320), multiple=16)
    assert out["global_view"].shape == (3, 32, 320) and (out["global_view"] == -1).all()
    assert out["mode"] == "fixed" and out["tiles"] is None
    with pytest.raises(AssertionError, match="multiples"):
        process_image(strip, (30, 320), multiple=16)
