"""Denoised Cross-Video Contrast: snippet pseudo-labels from a T-CAS, k-means over all training
snippets and the confidence map it gives, and the contrast itself (projection head, denoised
region features, the region memory bank, InfoNCE, the beta schedule, refresh rounds)."""
