"""An empty gunicorn configuration: the reference servers run with gunicorn's defaults plus their flags.

Without it gunicorn would read ./gunicorn.conf.py, which is ours.
"""
