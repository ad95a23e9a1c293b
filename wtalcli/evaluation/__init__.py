"""Localization and evaluation: BaS-Net inference from a T-CAS to scored segments, ground truth
under the THUMOS14 / ActivityNet protocols, the one mAP implementation, what an evaluation reads
(predictions, ground truth) and its parameters, in-memory scoring for held-out selection, and the
diagnostics against the ground truth (never used for training), one definition each: among them the
per-class separation of action from background and the linear probes."""
