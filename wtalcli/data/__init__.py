"""Data: the feature-set and T-CAS schema, the snippet time grid, one reader per annotation
format (THUMOS14 txt, ActivityNet-style JSON, W-TALC arrays, BaS-Net's gt.json), the importers of
the feature layouts the field ships, the packaged public ground truths, and the built-in synthetic
THUMOS-like dataset."""
