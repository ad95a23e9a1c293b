"""Infrastructure every other part stands on: the artifact store (atomic, manifest-carrying,
cached by key), stage parameters declared once (with the fields several stages share), per-stage
code fingerprints, the names of DCC's refresh rounds, a pool of worker processes, file helpers,
errors that become one-line messages, the stderr console, and the process group under ``torchrun``.
The bottom layer: it imports no other part of wtal (``docs/CONTRIBUTING.md``)."""
