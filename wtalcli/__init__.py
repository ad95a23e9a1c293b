"""wtal: weakly-supervised temporal action localization (BaS-Net baseline + DCC)."""

__version__ = "0.1.0"
