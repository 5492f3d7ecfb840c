"""Generated gRPC and protobuf modules for containerd's API; generated, do not edit.

Regenerate with ``python -m collector.sources.regen``. Only ``collector.sources.containerd``
imports these modules.
"""
