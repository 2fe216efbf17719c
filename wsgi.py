"""Entry point for gunicorn (`gunicorn -c gunicorn.conf.py wsgi:app`).

Imported in the worker process, never the master (no preload_app), so the
feed, dispatcher and writer threads start exactly once, after the fork.
"""
from app import create_app

app = create_app()
app.extensions["services"].start()
