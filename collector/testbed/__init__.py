"""A private containerd, registry and throttling proxy for end-to-end tests and demos.

``Testbed`` starts the three services on 127.0.0.1 in a temp dir; ``write_image`` writes synthetic
OCI images to push into it. Needs the ``containerd``, ``ctr``, ``docker-registry`` and ``skopeo``
programs (``missing_tools`` says which are absent).
"""

from collector.testbed.config import (
    INSTALL_COMMAND,
    NAMESPACE,
    TOOLS,
    install_message,
    missing_tools,
)
from collector.testbed.oci import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_MANIFEST,
    Blob,
    ImageInfo,
    Layer,
    write_image,
)
from collector.testbed.services import MiB, PushedImage, Testbed

__all__ = [
    "INSTALL_COMMAND",
    "MEDIA_TYPE_CONFIG",
    "MEDIA_TYPE_INDEX",
    "MEDIA_TYPE_LAYER_GZIP",
    "MEDIA_TYPE_LAYER_TAR",
    "MEDIA_TYPE_MANIFEST",
    "NAMESPACE",
    "TOOLS",
    "Blob",
    "ImageInfo",
    "Layer",
    "MiB",
    "PushedImage",
    "Testbed",
    "install_message",
    "missing_tools",
    "write_image",
]
