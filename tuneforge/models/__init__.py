"""Base models: the catalog of names users type and how each is loaded (see catalog.py)."""
