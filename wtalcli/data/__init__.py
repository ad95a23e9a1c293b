"""Data: the feature-set and T-CAS schema, the snippet time grid, one reader per annotation
format (THUMOS14 txt, ActivityNet-style JSON, BaS-Net's gt.json), the packaged public ground truths
and their identity, the importers of the feature layouts the field ships (one module per layout),
the built-in synthetic THUMOS-like dataset, and the ``features`` artifact built from those two."""
