"""Presentation only (nothing here changes an artifact): the figures of ``wtal report``, and the
text description of an artifact for ``wtal show``."""
