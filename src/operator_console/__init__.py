"""An AI operations console: watch a distributed system, diagnose faults, prove the fix."""

__version__ = "0.1.0"
