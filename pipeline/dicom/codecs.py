"""Transfer syntaxes: which package decodes which, and which are lossy (PS3.5 section 8, 10)."""
from __future__ import annotations

from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from pipeline.errors import ConfigError

# transfer syntax UID prefix -> what to install when no decoder plugin is available
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or Pillow, python-gdcm)",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (or Pillow, python-gdcm)",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (or python-gdcm)",  # JPEG lossless process 14
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (or python-gdcm)",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (or python-gdcm)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (or python-gdcm)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (or python-gdcm, Pillow)",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (or python-gdcm, Pillow)",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (or pydicom's own RLE decoder)",
}
# always lossy -> Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1); JPEG 2000 and HTJ2K
# may be lossy: for them the source's own LossyImageCompression tag tells (and is kept).
LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
}


def missing_decoder_reason(transfer_syntax: str) -> str | None:
    """A one-line reason naming the package to install when no installed plugin can decode
    ``transfer_syntax``; None when one can (or the syntax is not compressed)."""
    ts = UID(transfer_syntax)
    if not ts.is_compressed:
        return None
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"transfer syntax {ts} ({ts.name}) is not supported by pydicom"
    if decoder.is_available:
        return None
    return f"no decoder installed for {ts.name} pixel data: pip install {_DECODER_PACKAGES.get(str(ts), 'python-gdcm')}"


# [denoise] output_transfer_syntax -> the syntax of the derived series: uncompressed or lossless
# (a derived series doubles a site's CT storage; lossless compression halves that)
OUTPUT_SYNTAXES = {"explicit_le": ExplicitVRLittleEndian, "rle": RLELossless, "jpeg_ls_lossless": JPEGLSLossless,
                   "jpeg2000_lossless": JPEG2000Lossless}
_ENCODER_PACKAGES = {RLELossless: "pylibjpeg-rle (or pydicom's own RLE encoder)", JPEGLSLossless: "pyjpegls",
                     JPEG2000Lossless: "pylibjpeg-openjpeg"}


def output_syntax(name: str) -> UID:
    """The transfer syntax UID an ``output_transfer_syntax`` setting names; ``ConfigError`` for an
    unknown name or a syntax no installed encoder writes (naming the package to install)."""
    if name not in OUTPUT_SYNTAXES:
        raise ConfigError(f"output_transfer_syntax must be one of {sorted(OUTPUT_SYNTAXES)}, got {name!r}")
    ts = UID(OUTPUT_SYNTAXES[name])
    if ts.is_compressed and not get_encoder(ts).is_available:
        raise ConfigError(f"output_transfer_syntax {name}: no encoder installed for {ts.name}: "
                          f"pip install {_ENCODER_PACKAGES[ts]}")
    return ts
