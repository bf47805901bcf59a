"""The release report: one HTML page per pipeline run that embeds every step's report."""

from components.release_report.report import (
    CanaryInterval, ReleaseFacts, StageLine, canary_from_report, canary_svg, render_html,
)

__all__ = ["CanaryInterval", "ReleaseFacts", "StageLine", "canary_from_report", "canary_svg", "render_html"]
