"""Golden vectors of the formats this version writes: a frame of every native protocol operation
and result, and a stored value of every record kind.

Each kind's example is built from its fields (examples.py), every field set, so a field inserted,
removed, retyped or moved changes its encoding, and `tests/test_formats.py` fails on the committed
vectors. That is the point: a format change must be deliberate. Make it a version step (the native
protocol's PROTOCOL_VERSION, the store's FORMAT_VERSION), then write the new vectors beside the old
ones with `python -m tests.vectors.make`.

sigv4_suite.json is not a format of ours: it holds AWS's published Signature Version 4 test suite,
which tests/net/test_sigv4.py checks the verifier against (the file says where its values come from).
"""
