"""Prefect flows. ``clip-hand`` (flows/clip_hand.py) turns one ClipRequest into one clip."""
