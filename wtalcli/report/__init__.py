"""Presentation: the ``wtal report`` page (which artifacts, its sections, the HTML and the figures),
the text description of an artifact for ``wtal show``, and the tables and figure of an
``ablation`` artifact (so ``ablate``'s fingerprint holds :mod:`.ablation` and :mod:`.plots`; no
other stage imports this package)."""
