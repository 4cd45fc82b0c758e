"""The pure policy: allocation per mode and request class, the AUTO mode switch, outlier ejection and panic.

Everything here is a function or a small state machine over plain data (``tritonmix.controller.model``); time comes in
as an argument (``now``), never from a clock.
"""
from .auto import AutoMode, RoomMedian, Shortfall, detect_shortfall
from ...request.ejection import OutlierDetector
from .planner import PlanSettings, make_plan

__all__ = ["AutoMode", "Shortfall", "detect_shortfall", "OutlierDetector", "PlanSettings", "make_plan"]
