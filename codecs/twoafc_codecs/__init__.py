"""Image codecs for making 2AFC study stimuli, behind one small interface.

Each codec has a registered name, a version string naming the library that
produced the bytes, and one integer quality knob (``level``) with a valid
range and direction. ``encode_image`` always codes a whole image and reports
its true bitrate; patches are cut from the decoded result afterwards.

    from twoafc_codecs import encode_image, load_rgb, center_crop
    image = center_crop(load_rgb("photo.png"), 512)
    result = encode_image(image, "jpeg", 30)
    print(result.bpp, result.version, result.decoded.shape)

To hit a bitrate instead of a knob setting, ``encode_at_bpp`` searches the
knob for the level whose whole-image bitrate is nearest the target:

    result = encode_at_bpp(image, "avif", 0.5)
    print(result.level, result.achieved_bpp, result.within_tolerance)

New codecs subclass ``Codec`` and are added with ``register``. Codecs whose
library is missing from this machine are left out of the registry.
"""

from .base import BatchedCodec, Codec, CodecError, UnknownCodec
from .heif_codecs import HEIF_CODECS
from .imagecodecs_codecs import IMAGECODECS_CODECS
from .images import center_crop, cut_patch, load_rgb, patch_positions
from .pillow_codecs import PILLOW_CODECS
from .rate import MAX_TARGET_BPP, RateTargeted, encode_at_bpp, validate_target_bpp
from .registry import (
    Encoded,
    available_codecs,
    check_determinism,
    encode_image,
    encode_images,
    get_codec,
    register,
    register_available,
    validate_setting,
)

__all__ = [
    "MAX_TARGET_BPP",
    "BatchedCodec",
    "Codec",
    "CodecError",
    "Encoded",
    "RateTargeted",
    "UnknownCodec",
    "available_codecs",
    "center_crop",
    "check_determinism",
    "cut_patch",
    "encode_at_bpp",
    "encode_image",
    "encode_images",
    "get_codec",
    "load_rgb",
    "patch_positions",
    "register",
    "register_available",
    "validate_setting",
    "validate_target_bpp",
]

# Codecs whose library is missing on this machine are left out.
register_available(PILLOW_CODECS + HEIF_CODECS + IMAGECODECS_CODECS)

# Learned codecs and GPU JPEG import torch only when first used.
from . import gpu_jpeg, learned  # noqa: E402

learned.register_all()
gpu_jpeg.register_all()
