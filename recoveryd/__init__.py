"""recoveryd: a daemon that recovers failed background tasks.

Applications LPUSH a failure record onto a Redis list; recoveryd classifies
the failure, retries what can recover with a backoff fitted to the kind of
failure, and tells the right people about what cannot.
"""

__version__ = "0.1.0"
