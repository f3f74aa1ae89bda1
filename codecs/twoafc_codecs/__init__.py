"""Image codecs for making 2AFC study stimuli, behind one small interface.

Each codec has a registered name, a version string naming the library that
produced the bytes, and one integer quality knob (``level``) with a valid
range and direction. ``encode_image`` always codes a whole image and reports
its true bitrate; patches are cut from the decoded result afterwards.

    from twoafc_codecs import encode_image, load_rgb, center_crop
    image = center_crop(load_rgb("photo.png"), 512)
    result = encode_image(image, "jpeg", 30)
    print(result.bpp, result.version, result.decoded.shape)

New codecs subclass ``Codec`` and are added with ``register``.
"""

from .base import Codec, CodecError, UnknownCodec
from .images import center_crop, cut_patch, load_rgb, patch_positions
from .pillow_codecs import PILLOW_CODECS
from .registry import (
    Encoded,
    available_codecs,
    encode_image,
    get_codec,
    register,
    validate_setting,
)

__all__ = [
    "Codec",
    "CodecError",
    "Encoded",
    "UnknownCodec",
    "available_codecs",
    "center_crop",
    "cut_patch",
    "encode_image",
    "get_codec",
    "load_rgb",
    "patch_positions",
    "register",
    "validate_setting",
]

# A Pillow built without a format's library would fail on first use;
# leaving the codec out makes available_codecs() tell the truth instead.
for _codec in PILLOW_CODECS:
    if _codec.available():
        register(_codec)
del _codec
