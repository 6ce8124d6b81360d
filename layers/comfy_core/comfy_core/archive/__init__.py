"""The archive: sweep.py copies ComfyUI's finished outputs into S3, results.py is the API's view of it.
"""
