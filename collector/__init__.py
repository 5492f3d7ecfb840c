"""pulltrace's live collector: reports in; rates, ETAs, stalls and errors out."""

__version__ = "0.1.0"
