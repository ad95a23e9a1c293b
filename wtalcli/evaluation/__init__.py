"""Localization and evaluation: BaS-Net inference from a T-CAS to scored segments, ground truth
under the THUMOS14 / ActivityNet protocols, the one mAP implementation, and diagnostics that
compare a T-CAS or pseudo-labels with the ground truth (never used for training)."""
