"""Loading untrusted image files, cropping, and choosing patches."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import twoafc_codecs as tc


def encode_with_pillow(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG header declaring width x height, with no real pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def small_photo(astronaut512) -> np.ndarray:
    return astronaut512[::4, ::4].copy()  # 128x128 keeps the file tests fast


# --- sources ------------------------------------------------------------


def test_png_from_bytes_path_and_file(small_photo, tmp_path):
    data = encode_with_pillow(Image.fromarray(small_photo), "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    with path.open("rb") as file:
        for source in (data, bytearray(data), path, str(path), io.BytesIO(data), file):
            loaded = tc.load_rgb(source)
            assert loaded.dtype == np.uint8
            np.testing.assert_array_equal(loaded, small_photo)


def test_missing_file_is_a_codec_error(tmp_path):
    with pytest.raises(tc.CodecError, match="cannot read image file"):
        tc.load_rgb(tmp_path / "absent.png")


# --- rejections ---------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello, world", b"%PDF-1.7\n" + bytes(200)])
def test_rejects_non_images(data):
    with pytest.raises(tc.CodecError, match="not an image"):
        tc.load_rgb(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_rejects_truncated_files(small_photo, fmt):
    data = encode_with_pillow(Image.fromarray(small_photo), fmt)
    with pytest.raises(tc.CodecError, match="corrupt"):
        tc.load_rgb(data[: len(data) // 2])


def test_rejects_png_with_damaged_pixel_data(small_photo):
    data = bytearray(encode_with_pillow(Image.fromarray(small_photo), "PNG"))
    data[len(data) // 2] ^= 0xFF  # breaks the IDAT checksum
    with pytest.raises(tc.CodecError, match="corrupt"):
        tc.load_rgb(bytes(data))


def test_refuses_too_many_pixels_from_the_header_alone(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    # 80 MP declared in a ~100-byte file: under Pillow's own bomb limit, over ours.
    data = png_header_only(10_000, 8_000)
    with pytest.raises(tc.CodecError) as excinfo:
        tc.load_rgb(data)
    message = str(excinfo.value)
    assert "too many pixels" in message and "10000x8000" in message
    assert "50,000,000" in message


def test_refuses_decompression_bombs():
    # 400 MP: Pillow's own guard fires inside Image.open; still a CodecError.
    with pytest.raises(tc.CodecError, match="too many pixels"):
        tc.load_rgb(png_header_only(20_000, 20_000))


def test_max_pixels_is_configurable(small_photo):
    data = encode_with_pillow(Image.fromarray(small_photo), "PNG")
    with pytest.raises(tc.CodecError, match="limit 10,000"):
        tc.load_rgb(data, max_pixels=10_000)
    assert tc.load_rgb(data, max_pixels=128 * 128).shape == (128, 128, 3)


def test_rejects_tiny_images():
    data = encode_with_pillow(Image.new("RGB", (40, 8)), "PNG")
    with pytest.raises(tc.CodecError, match="too small: 40x8"):
        tc.load_rgb(data)
    assert tc.load_rgb(data, min_side=8).shape == (8, 40, 3)


# --- mode conversion ------------------------------------------------------


def test_rgba_is_composited_onto_white(small_photo):
    alpha = np.zeros((128, 128), np.uint8)
    alpha[:, 64:] = 255
    alpha[:, 60:64] = 128
    rgba = np.dstack([small_photo, alpha])
    loaded = tc.load_rgb(encode_with_pillow(Image.fromarray(rgba), "PNG"))
    assert loaded.shape == (128, 128, 3) and loaded.dtype == np.uint8
    assert np.all(loaded[:, :60] == 255)
    np.testing.assert_array_equal(loaded[:, 64:], small_photo[:, 64:])
    half = loaded[:, 60:64].astype(int)
    expected = (small_photo[:, 60:64].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(half - expected).max() <= 1


def test_grayscale_with_alpha_is_composited_onto_white():
    la = Image.merge("LA", [Image.new("L", (32, 32), 0), Image.new("L", (32, 32), 0)])
    assert np.all(tc.load_rgb(encode_with_pillow(la, "PNG")) == 255)


def test_cmyk_jpeg_becomes_rgb(small_photo):
    cmyk = Image.fromarray(small_photo).convert("CMYK")
    data = encode_with_pillow(cmyk, "JPEG", quality=95)
    loaded = tc.load_rgb(data)
    assert loaded.shape == (128, 128, 3) and loaded.dtype == np.uint8
    mse = np.mean((loaded.astype(float) - small_photo) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    loaded = tc.load_rgb(encode_with_pillow(img, "PNG"))
    assert loaded.shape == (64, 64, 3) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 1])
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])
    expected = np.rint(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(loaded[..., 0], expected)
    # Clipping would turn the whole upper range white; scaling keeps a ramp.
    assert len(np.unique(loaded)) == 256


def test_float_grayscale_in_unit_range_is_scaled():
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    loaded = tc.load_rgb(encode_with_pillow(Image.fromarray(values), "TIFF"))
    assert loaded[0, 0, 0] == 0 and loaded[-1, -1, 0] == 255


def test_palette_images_become_rgb(small_photo):
    pal = Image.fromarray(small_photo).quantize(colors=64)
    assert pal.mode == "P"
    loaded = tc.load_rgb(encode_with_pillow(pal, "PNG"))
    np.testing.assert_array_equal(loaded, np.array(pal.convert("RGB")))


def test_palette_transparency_is_composited_onto_white(small_photo):
    pal = Image.fromarray(small_photo).quantize(colors=64)
    index = np.array(pal)
    transparent = int(index[0, 0])
    loaded = tc.load_rgb(encode_with_pillow(pal, "PNG", transparency=transparent))
    assert np.all(loaded[index == transparent] == 255)
    opaque = index != transparent
    np.testing.assert_array_equal(loaded[opaque], np.array(pal.convert("RGB"))[opaque])


def test_grayscale_becomes_three_equal_channels(small_photo):
    gray = Image.fromarray(small_photo).convert("L")
    loaded = tc.load_rgb(encode_with_pillow(gray, "PNG"))
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], np.array(gray))


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (64, 32), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = tc.load_rgb(encode_with_pillow(img, "JPEG", exif=exif))
    assert loaded.shape == (64, 32, 3)


# --- crops and patches ----------------------------------------------------


def test_center_crop(photo):
    height, width = photo.shape[:2]
    crop = tc.center_crop(photo, 256)
    assert crop.shape == (256, 256, 3)
    top, left = (height - 256) // 2, (width - 256) // 2
    np.testing.assert_array_equal(crop, photo[top : top + 256, left : left + 256])
    assert tc.center_crop(photo, None) is photo


def test_center_crop_too_large(photo):
    height, width = photo.shape[:2]
    with pytest.raises(tc.CodecError) as excinfo:
        tc.center_crop(photo, 1024)
    assert str(excinfo.value) == f"cannot crop 1024x1024 from a {width}x{height} image"


def test_patch_positions_are_deterministic_non_overlapping_and_in_bounds():
    positions = tc.patch_positions(300, 451, 64, 12, seed=7)
    assert positions == tc.patch_positions(300, 451, 64, 12, seed=7)
    assert positions != tc.patch_positions(300, 451, 64, 12, seed=8)
    assert len(positions) == 12 == len(set(positions))
    for y, x in positions:
        assert isinstance(y, int) and isinstance(x, int)
        assert y % 64 == 0 and x % 64 == 0
        assert 0 <= y <= 300 - 64 and 0 <= x <= 451 - 64
    mask = np.zeros((300, 451), int)
    for y, x in positions:
        mask[y : y + 64, x : x + 64] += 1
    assert mask.max() == 1


def test_patch_positions_can_fill_the_grid_but_not_more():
    # 300x451 holds 4 x 7 = 28 whole 64x64 cells.
    assert len(set(tc.patch_positions(300, 451, 64, 28, seed=0))) == 28
    with pytest.raises(tc.CodecError, match="has 28 non-overlapping 64x64 patches, 29 requested"):
        tc.patch_positions(300, 451, 64, 29, seed=0)


def test_cut_patch(astronaut512):
    patch = tc.cut_patch(astronaut512, 64, 128, 32)
    np.testing.assert_array_equal(patch, astronaut512[64:96, 128:160])
    with pytest.raises(tc.CodecError, match="does not fit"):
        tc.cut_patch(astronaut512, 500, 0, 32)
    with pytest.raises(tc.CodecError, match="does not fit"):
        tc.cut_patch(astronaut512, -1, 0, 32)
