"""The spec: loading with source positions, schema validation, model and semantic checks."""

# The largest spec file meshc parses; readers read one byte more, so that the parser can refuse it.
# Here, not in document.py, so that reading a spec tree (a no-op build) does not import the YAML parser.
MAX_FILE_BYTES = 1024 * 1024
