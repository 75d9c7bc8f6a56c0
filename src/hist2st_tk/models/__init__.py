"""Predictors of expression from image features: one module per method, sharing one life cycle."""

from __future__ import annotations
