"""A fleet of ComfyUI servers behind one API: backends (who they are), pool (a client per
backend, fan-out), routing (where a new prompt goes), placement (where a prompt is)."""
