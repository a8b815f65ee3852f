"""dovecote: a durable message broker with the semantics of Amazon SQS and SNS."""

__version__ = "0.1.0"  # the only place it is written: pyproject.toml reads it from here
