"""Infrastructure every other part stands on: the artifact store (atomic, manifest-carrying,
cached by key), stage parameters declared once, per-stage code fingerprints, file helpers, errors
that become one-line messages, the stderr console, and the process group under ``torchrun``."""
