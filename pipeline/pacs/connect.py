"""The client of the configured protocol (the one module that knows both implementations)."""
from __future__ import annotations

from pipeline.pacs.client import PacsClient
from pipeline.pacs.config import PacsConfig
from pipeline.pacs.dicomweb import DicomWebClient
from pipeline.pacs.dimse import DimseClient


def connect(config: PacsConfig) -> PacsClient:
    """The client of ``config.protocol``: DICOMweb or DIMSE."""
    if config.protocol == "dicomweb":
        return DicomWebClient(config)
    return DimseClient(config)
