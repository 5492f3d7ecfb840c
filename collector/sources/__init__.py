"""Where reports come from: containerd, recordings, synthetic plans."""
