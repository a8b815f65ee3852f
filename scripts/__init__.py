"""dovecote: a durable message broker with the semantics of Amazon SQS and SNS.

`dovecote.embedded()` and `dovecote.open_broker()` run a broker inside the calling process
(dovecote/embedded_broker.py); they are loaded when first named, so `import dovecote` stays free.
"""

__version__ = "0.1.0"  # the only place it is written: pyproject.toml reads it from here

_EMBEDDING = ("embedded", "open_broker")


def __getattr__(name: str):
    if name in _EMBEDDING:
        from . import embedded_broker

        return getattr(embedded_broker, name)
    raise AttributeError(f"module 'dovecote' has no attribute {name!r}")
