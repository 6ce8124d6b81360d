"""Workflows: store.py (S3), patcher.py (requests into API-format prompts), convert.py (UI → API),
ui.py (UI-format workflows with the node catalogue), inputs.py and images.py (images in).
"""
