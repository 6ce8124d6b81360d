"""The live watcher: ComfyUI's WebSocket read as it happens (issue 12).

comfyui/protocol.py reads messages (pure) and comfyui/socket.py holds the connection; here
lease.py keeps it to one watcher per ComfyUI, state.py records each prompt's backend and progress
(DynamoDB), and watcher.py runs them together for one Lambda invocation.
"""
