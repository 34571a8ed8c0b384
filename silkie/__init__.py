"""Silkie: align vision-language models with AI feedback (VLFeedback + DPO)."""

__version__ = "0.1.0"
