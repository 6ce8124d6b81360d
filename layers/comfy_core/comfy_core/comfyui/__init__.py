"""Talking to ComfyUI: client.py over HTTP, socket.py over its WebSocket, protocol.py reads the
messages (pure).
"""
