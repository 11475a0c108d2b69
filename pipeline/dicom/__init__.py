"""DICOM in and out: find the CT stacks of a folder, decide which are denoised, read them in HU, write
the derived series, and the UIDs and geometry both sides share."""
