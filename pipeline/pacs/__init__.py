"""The PACS as source and sink of the nightly run.

``client`` defines what the run asks of a PACS (query studies, series and instances; retrieve a
series into a folder; store files) and its two implementations: ``dicomweb`` (QIDO-RS, WADO-RS,
STOW-RS through dicomweb-client) and ``dimse`` (C-FIND, C-GET or C-MOVE, C-STORE through pynetdicom);
``connect`` picks the one the configuration names.
``config`` reads the ``[pacs]`` settings and credentials, ``retry`` retries transient faults with
back-off, ``nightly`` retrieves a study into a work folder, stores the derived series back, verifies
them by query and keeps the record of studies done. Everything between retrieval and storage is the
folder pipeline (``DenoiseStudy``), unchanged.
"""
