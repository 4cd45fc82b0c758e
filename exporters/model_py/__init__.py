"""Python-backend ``model.py`` files, copied as they are into ``<model>/1/model.py`` (they run in Triton's stub)."""
