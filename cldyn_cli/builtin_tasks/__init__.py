"""Task plugins that ship inside cldyn, registered like any installed plugin (see plugins.py)."""
