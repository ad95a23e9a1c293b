"""Model and training: BaS-Net, its loss, snippet sampling, the resumable deterministic trainer
(with hooks that DCC plugs into), inference that maps the T-CAS back to every snippet, and the
runner that turns a training run into published ``model`` and ``tcas`` artifacts."""
