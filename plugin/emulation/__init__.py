"""Accelerator emulation: local Triton models that reproduce a hardware profile (always labelled as emulation).

``model.py`` is the python-backend model itself (it runs inside Triton and is not importable here);
``repository`` writes a model repository serving it; ``profiles`` holds the builtin hardware profiles.
"""
from __future__ import annotations

from .profiles import BUILTIN_PROFILES, Profile, resolve_profile, validate_profile
from .repository import DEFAULT_MODEL_NAME, EmulationSettings, emulation_config, write_emulated_repository

__all__ = ["BUILTIN_PROFILES", "DEFAULT_MODEL_NAME", "EmulationSettings", "Profile", "emulation_config",
           "resolve_profile", "validate_profile", "write_emulated_repository"]
