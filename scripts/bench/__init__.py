"""The benchmarks, run from a checkout with the editable install and left out of the built wheel:
`python -m dovecote.bench` (the durable core), `python -m dovecote.bench.sqs`, `.sns`, `.pushes`,
`.aws` and `.log`, and a wrk script in wrk/. Each is bounded in work; all but `.log` (which writes a
store directly) start a real broker on a fresh data directory."""
