"""Enhanced CT (multi-frame) to per-frame classic CT headers (PS3.3 A.38, C.7.6.16).

Position, orientation, pixel spacing, thickness, rescale and window of each frame live in the
Per-frame or Shared Functional Groups Sequences. Each frame becomes one classic CT Image header with
that frame's geometry, so the derived series is written as ordinary single-frame CT images.
"""
from __future__ import annotations

import copy
from pathlib import Path

from pydicom.dataset import Dataset

from pipeline.dicom.discovery import functional_group
from pipeline.dicom.selection import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE
from pipeline.errors import InputError

# multi-frame / functional-group attributes that have no place in a classic CT image
_MULTIFRAME_ONLY = (
    "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "NumberOfFrames",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "DimensionOrganizationType",
    "FrameIncrementPointer", "ContentQualification", "ImageComments", "PixelData",
    "PresentationLUTShape", "IconImageSequence", "SourceImageEvidenceSequence",
    "ReferencedImageEvidenceSequence", "AcquisitionContextSequence", "ConcatenationUID",
    "InConcatenationNumber", "InConcatenationTotalNumber", "SOPInstanceUIDOfConcatenationSource",
    "VolumetricProperties", "VolumeBasedCalculationTechnique", "PixelPresentation",
    "IsocenterPosition", "CardiacSynchronizationTechnique", "RespiratoryMotionCompensationTechnique",
)


def is_enhanced(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) == ENHANCED_CT_IMAGE_STORAGE


def frame_header(ds: Dataset, frame: int, path: Path) -> Dataset:
    """A classic CT header for 0-based ``frame`` of enhanced ``ds`` (without pixel data).

    Its SOPClassUID/SOPInstanceUID stay those of the enhanced source (the writer references them
    with ReferencedFrameNumber and gives the derived image its own classic identity)."""
    out = Dataset()
    for elem in ds:
        if elem.keyword not in _MULTIFRAME_ONLY and not elem.tag.is_private and elem.tag.group != 0x0002:
            out.add(copy.deepcopy(elem))
    plane = functional_group(ds, "PlanePositionSequence", frame)
    orient = functional_group(ds, "PlaneOrientationSequence", frame)
    measures = functional_group(ds, "PixelMeasuresSequence", frame)
    if plane is None or "ImagePositionPatient" not in plane:
        raise InputError(path, f"frame {frame + 1}: no ImagePositionPatient in the functional groups")
    if orient is None or "ImageOrientationPatient" not in orient:
        raise InputError(path, f"frame {frame + 1}: no ImageOrientationPatient in the functional groups")
    if measures is None or "PixelSpacing" not in measures:
        raise InputError(path, f"frame {frame + 1}: no PixelSpacing in the functional groups")
    out.ImagePositionPatient = plane.ImagePositionPatient
    out.ImageOrientationPatient = orient.ImageOrientationPatient
    out.PixelSpacing = measures.PixelSpacing
    if "SliceThickness" in measures:
        out.SliceThickness = measures.SliceThickness
    rescale = functional_group(ds, "PixelValueTransformationSequence", frame)
    if rescale is not None:
        for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if kw in rescale:
                setattr(out, kw, rescale[kw].value)
    voi = functional_group(ds, "FrameVOILUTSequence", frame)
    if voi is not None:
        for kw in ("WindowCenter", "WindowWidth"):
            if kw in voi:
                setattr(out, kw, voi[kw].value)
    xray = functional_group(ds, "CTXRayDetailsSequence", frame)
    out.KVP = xray.get("KVP", "") if xray is not None else ""
    recon = functional_group(ds, "CTReconstructionSequence", frame)
    if recon is not None and "ConvolutionKernel" in recon:
        out.ConvolutionKernel = recon.ConvolutionKernel
    content = functional_group(ds, "FrameContentSequence", frame)
    if content is not None and "FrameAcquisitionNumber" in content:
        out.AcquisitionNumber = content.FrameAcquisitionNumber
    out.InstanceNumber = frame + 1
    image_type = [str(v) for v in (ds.get("ImageType") or ["ORIGINAL", "PRIMARY", "AXIAL"])]
    out.ImageType = image_type[:3]
    out.file_meta = copy.deepcopy(ds.file_meta)
    return out


def classic_sop_class(src: Dataset) -> str:
    """SOP class of the derived image: CT Image Storage for CT and Enhanced CT sources alike."""
    return CT_IMAGE_STORAGE if is_enhanced(src) else str(src.SOPClassUID)
