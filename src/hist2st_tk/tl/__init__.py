"""Tools: fit predictors, predict and evaluate expression, tumor regions, region comparison, survival export."""

from __future__ import annotations

__all__: list[str] = []
