"""Weights on disk: our checkpoint format (checkpoint.py) and the map from the released
NVlabs and Hugging Face state dicts onto our parameters (state_dicts.py)."""
