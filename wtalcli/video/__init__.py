"""Feature extraction from raw videos (the optional ``video`` extra): streamed decoding with exact
resampling to the snippet grid, torchvision backbones, and the resumable per-video cache."""
