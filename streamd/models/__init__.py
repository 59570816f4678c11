"""Pretrained models from weights that ship inside PyPI packages (`streamd models`, the demo)."""
