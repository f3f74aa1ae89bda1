"""Analytics: DPL (LPIPS-form) fitting on cached features, 2AFC scoring of metrics, reports.

``dpl``, ``fitting``, ``metrics`` and ``lpips_format`` need no Django; ``services``
reads a study's votes from the database and runs them.
"""
