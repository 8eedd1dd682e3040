"""The presets: one file per model family (and vocoder.py), each a table of presets over default.py.

Name one with `--config=configs/vqvc_plus.py:demo` from the repository (where `configs` links here), or
with `--config=vqvc_plus.py:demo` from any directory once the package is installed.
"""
