"""Feature extraction from raw videos (the optional ``video`` extra): ``extract``'s parameters,
streamed decoding with exact resampling to the snippet grid, torchvision backbones, the resumable
per-video cache, and the ``features`` artifact built from them."""
