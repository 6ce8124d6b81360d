"""The live watcher: ComfyUI's WebSocket read as it happens (issue 12).

protocol.py reads messages (pure), socket.py holds the connection, lease.py keeps it to one
watcher per ComfyUI, watcher.py runs them together for one Lambda invocation.
"""
