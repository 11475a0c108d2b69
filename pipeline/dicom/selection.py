"""Which DICOM objects are denoised, and why the others are skipped (configurable in luigi.cfg)."""
from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from pipeline.errors import ConfigError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC and its multi-frame variants
# DerivationDescription of every series this tool writes starts with this marker (see writer.py).
DERIVED_MARKER = "ct-denoise"


@dataclass(frozen=True)
class SelectionRules:
    """Rules applied to each file (header) and to each stack of a series.

    Scanners also label ordinary reconstructions DERIVED, so ImageType DERIVED alone is never a
    reason to skip; this tool's own output is recognised by ``DERIVED_MARKER``.
    """

    sop_classes: tuple[str, ...] = (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE)
    skip_image_types: tuple[str, ...] = ("LOCALIZER", "SCREEN SAVE", "DOSE INFO", "DOSE REPORT", "SECONDARY CAPTURE")
    min_matrix: int = 16  # rows and columns of a denoisable image (icons and thumbnails are smaller)
    # a single-image stack beside a larger stack of the same series that has another orientation or
    # matrix is a localizer or a screenshot, not a slice
    skip_lone_images_unlike_main_stack: bool = True
    # a single image alone in its series: skip it when it is not axial (a lone sagittal/coronal
    # image is a scout) or not square (screenshots)
    skip_lone_non_axial: bool = True
    skip_lone_non_square: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_image_types", tuple(s.upper() for s in self.skip_image_types))
        if not self.sop_classes:
            raise ConfigError("selection: sop_classes is empty, nothing would be denoised")
        if self.min_matrix < 1:
            raise ConfigError("selection: min_matrix must be >= 1")

    def file_skip_reason(self, ds: Dataset) -> str | None:
        """Why a file (header only) is not denoised, or None."""
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class == MEDIA_DIRECTORY_STORAGE or "DirectoryRecordSequence" in ds:
            return "DICOMDIR / media directory, not an image"
        if not ds.get("SOPInstanceUID"):
            return "no SOPInstanceUID"
        if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
            return "Secondary Capture (screenshot or dose report), not a CT slice"
        if sop_class not in self.sop_classes:
            return f"SOP class {sop_class or '(none)'} is not a CT image class selected for denoising"
        if str(ds.get("Modality", "")).upper() != "CT":
            return f"modality {ds.get('Modality', '(none)')} is not CT"
        image_type = [str(v).upper().strip() for v in (ds.get("ImageType") or [])]
        for flag in self.skip_image_types:
            if flag in image_type:
                return f"ImageType {flag} (localizer, screen save or dose information)"
        if str(ds.get("DerivationDescription", "")).startswith(DERIVED_MARKER):
            return "a series this tool derived (never denoised again)"
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        if photometric and photometric not in ("MONOCHROME1", "MONOCHROME2"):
            return f"photometric interpretation {photometric} is not greyscale (screenshot?)"
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            return f"{ds.get('SamplesPerPixel')} samples per pixel, not greyscale"
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if min(rows, cols) < self.min_matrix:
            return f"matrix {rows}x{cols} is smaller than {self.min_matrix}x{self.min_matrix}"
        return None
