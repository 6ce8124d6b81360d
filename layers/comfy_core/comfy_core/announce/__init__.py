"""Announcements: events.py (EventBridge), webhooks.py (signed HTTP deliveries), notify.py (what is
announced when).
"""
