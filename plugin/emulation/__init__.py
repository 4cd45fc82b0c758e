"""Accelerator emulation: local Triton models that reproduce a hardware profile (always labelled as emulation)."""
from __future__ import annotations

from .profiles import BUILTIN_PROFILES, Profile, resolve_profile, validate_profile

__all__ = ["BUILTIN_PROFILES", "Profile", "resolve_profile", "validate_profile"]
