"""Denoised Cross-Video Contrast: its parameters, snippet pseudo-labels from a T-CAS, k-means over
all training snippets and the confidence map it gives (with the artifacts of both), the contrast
(projection head, denoised region features, the region memory bank, InfoNCE, the beta schedule),
the method as a training objective, training with it from a baseline's artifacts (refresh rounds
included), and the configurations of the DCC study."""
