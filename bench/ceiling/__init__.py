"""The ceiling for ``bench/serve.py``: the app's own settings plus one view that does one INSERT."""
